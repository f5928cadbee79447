package main

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/peft"
)

// goldenModelConfig is a small Qwen3 config.json: 2 layers, hidden 48, vocab 250.
const goldenModelConfig = "../../model/testdata/golden/config.json"

// writeTestModel writes a Qwen3 model with random BF16 weights and a tokenizer file to
// dir, and returns its configuration.
func writeTestModel(t *testing.T, dir string, maxShard int64) model.Config {
	t.Helper()
	cfg, err := model.LoadConfig(goldenModelConfig)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	var tensors []checkpoint.Tensor
	for _, p := range cfg.Params() {
		data := make([]float32, p.NumElements())
		for i := range data {
			data[i] = float32(rng.NormFloat64() * 0.2)
		}
		tensors = append(tensors, checkpoint.Tensor{Name: p.Name, DType: checkpoint.BF16, Shape: p.Shape, Data: checkpoint.FromFloat32(data)})
	}
	require.NoError(t, checkpoint.WriteModel(dir, tensors, checkpoint.ModelOptions{MaxShardSize: maxShard}))
	configJSON, err := os.ReadFile(goldenModelConfig)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), configJSON, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{"model": {"type": "BPE"}}`), 0o644))
	return cfg
}

// writeTestAdapter writes a rank-4 adapter on the attention projections of base, with
// nonzero random matrices, to dir.
func writeTestAdapter(t *testing.T, dir string, base model.Config, baseName string) *peft.Adapter {
	t.Helper()
	cfg := peft.Config{Rank: 4, Alpha: 8, TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, BaseModelNameOrPath: baseName}
	a, err := peft.NewAdapter(cfg, base)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range a.Tensors {
		for j := range a.Tensors[i].Data {
			a.Tensors[i].Data[j] = float32(rng.NormFloat64() * 0.1)
		}
	}
	require.NoError(t, peft.Write(dir, a))
	return a
}

func TestMergeCommand(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	writeTestAdapter(t, adapterDir, base, baseDir)
	out := filepath.Join(t.TempDir(), "merged")

	stdout, stderr, err := runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", out)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "8 weights changed (scaling 2), 16 tensors copied unchanged")
	assert.Contains(t, stdout, "wrote "+out+": model.safetensors")
	assert.Contains(t, stdout, "copied from the base: config.json, tokenizer.json")

	cfg, err := model.LoadConfig(out)
	require.NoError(t, err)
	assert.Equal(t, base, cfg)
	m, err := checkpoint.OpenModel(out)
	require.NoError(t, err)
	defer m.Close()
	assert.Len(t, m.Tensors(), 24)
	info, err := m.Info("model.layers.0.self_attn.q_proj.weight")
	require.NoError(t, err)
	assert.Equal(t, checkpoint.BF16, info.DType)
}

func TestMergeCommandSharded(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 8<<10)
	writeTestAdapter(t, adapterDir, base, "Qwen/Qwen3-0.6B")
	out := filepath.Join(t.TempDir(), "merged")

	stdout, stderr, err := runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", out, "--max-shard-size", "8KiB")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, checkpoint.IndexFileName)
	m, err := checkpoint.OpenModel(out)
	require.NoError(t, err)
	defer m.Close()
	assert.Greater(t, len(m.Files()), 1)
}

func TestMergeCommandOutputRules(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	writeTestAdapter(t, adapterDir, base, baseDir)

	busy := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(busy, "notes.txt"), []byte("keep"), 0o644))
	_, stderr, err := runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", busy)
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, "output directory is not empty")
	assert.Contains(t, stderr, "pass --force")
	_, err = os.Stat(filepath.Join(busy, "model.safetensors"))
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing is written without --force")

	_, stderr, err = runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", busy, "--force")
	require.NoError(t, err, stderr)
	_, err = os.Stat(filepath.Join(busy, "model.safetensors"))
	assert.NoError(t, err)
	notes, err := os.ReadFile(filepath.Join(busy, "notes.txt"))
	require.NoError(t, err)
	assert.Equal(t, "keep", string(notes), "--force leaves files that the merge does not write")

	_, stderr, err = runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", baseDir, "--force")
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, "is the base model directory")
}

func TestMergeCommandErrors(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	writeTestAdapter(t, adapterDir, base, baseDir)
	emptyDir := t.TempDir()
	out := filepath.Join(t.TempDir(), "out")

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing flag", []string{"--base", baseDir, "--adapter", adapterDir}, `Required flag "out" not set`},
		{"argument", []string{"--base", baseDir, "--adapter", adapterDir, "--out", out, "extra"}, `unexpected argument "extra"`},
		{"bad shard size", []string{"--base", baseDir, "--adapter", adapterDir, "--out", out, "--max-shard-size", "5GB"}, `invalid size "5GB"`},
		{"zero shard size", []string{"--base", baseDir, "--adapter", adapterDir, "--out", out, "--max-shard-size", "0"}, "--max-shard-size is 0"},
		{"not an adapter", []string{"--base", baseDir, "--adapter", emptyDir, "--out", out}, filepath.Join(emptyDir, "adapter_config.json") + ": file not found"},
		{"not a model", []string{"--base", emptyDir, "--adapter", adapterDir, "--out", out}, filepath.Join(emptyDir, "config.json") + " not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := runCLI(t, append([]string{"merge"}, tc.args...)...)
			requireExitCode(t, err, 1)
			assert.Contains(t, stderr, tc.want)
			_, statErr := os.Stat(out)
			assert.ErrorIs(t, statErr, os.ErrNotExist)
		})
	}
}

func TestMergeCommandRejectsWrongShape(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	wide := base
	wide.NumKVHeads = 4 // k_proj and v_proj get 64 outputs instead of 32
	writeTestAdapter(t, adapterDir, wide, baseDir)

	_, stderr, err := runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", filepath.Join(t.TempDir(), "out"))
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, filepath.Join(adapterDir, "adapter_model.safetensors"))
	assert.Contains(t, stderr, `tensor "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"`)
	assert.Contains(t, stderr, "shape [64 4], expected [32 4]")
}

func requireExitCode(t *testing.T, err error, code int) {
	t.Helper()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	assert.Equal(t, code, exitErr.ExitCode())
}
