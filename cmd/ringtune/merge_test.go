package main

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

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
		{"bad shard size", []string{"--base", baseDir, "--adapter", adapterDir, "--out", out, "--max-shard-size", "5G"}, `invalid size "5G"`},
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

func TestParseShardSize(t *testing.T) {
	// The values of transformers' convert_file_size_to_int for the same strings.
	cases := map[string]int64{
		"4096":     4096,
		"5GB":      5_000_000_000,
		"500MB":    500_000_000,
		"100KB":    100_000,
		"1GiB":     1 << 30,
		"64MiB":    64 << 20,
		"8KiB":     8 << 10,
		"2gib":     2 << 30,
		"5Gb":      625_000_000,
		"5gb":      625_000_000,
		"1Kb":      125,
		"5 GB":     5_000_000_000,
		"0":        0,
		"12345678": 12_345_678,
	}
	for in, want := range cases {
		got, err := parseShardSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "5G", "5B", "4K", "1.5GB", "-5GB", "+5GB", "GB", "5TB", "x", "5 G B"} {
		_, err := parseShardSize(bad)
		assert.ErrorContains(t, err, "invalid size", bad)
	}
	_, err := parseShardSize("9999999999GB")
	assert.ErrorContains(t, err, "is too large")
	_, err = parseShardSize("99999999999999999999")
	assert.ErrorContains(t, err, "is too large")
}

func TestMergeCommandDecimalShardSize(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	writeTestAdapter(t, adapterDir, base, baseDir)
	out := filepath.Join(t.TempDir(), "merged")

	// The BF16 weights take 107,552 bytes, so shards of 50,000 bytes make three.
	stdout, stderr, err := runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", out, "--max-shard-size", "50KB")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "model-00001-of-00003.safetensors")
	assert.Contains(t, stdout, checkpoint.IndexFileName)
}

func TestMergeCommandRejectsUnknownTensor(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	writeTestAdapter(t, adapterDir, base, baseDir)
	addBogusTensor(t, baseDir)
	out := filepath.Join(t.TempDir(), "out")

	_, stderr, err := runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", out)
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, "1 tensor matches no parameter")
	assert.Contains(t, stderr, "Remove it from the weights")
	assert.Contains(t, stderr, "model.layers.9.mlp.bogus.weight")
	_, err = os.Stat(out)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// addBogusTensor rewrites the single-file weights of dir with an extra tensor,
// model.layers.9.mlp.bogus.weight, that no Qwen3 config describes.
func addBogusTensor(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, checkpoint.SingleFileName)
	f, err := checkpoint.Open(path)
	require.NoError(t, err)
	var tensors []checkpoint.Tensor
	for _, info := range f.Tensors() {
		data := make([]byte, info.Size())
		require.NoError(t, f.ReadRaw(info.Name, data))
		tensors = append(tensors, checkpoint.Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: checkpoint.FromBytes(data)})
	}
	require.NoError(t, f.Close())
	tensors = append(tensors, checkpoint.Tensor{Name: "model.layers.9.mlp.bogus.weight", DType: checkpoint.F32, Shape: []int{2, 2}, Data: checkpoint.FromFloat32(make([]float32, 4))})
	require.NoError(t, checkpoint.Write(path, tensors, map[string]string{"format": "pt"}))
}

// addStaleSingleFile puts a model.safetensors next to the shards of dir, as a leftover
// of an earlier save would be.
func addStaleSingleFile(t *testing.T, dir string) {
	t.Helper()
	single := t.TempDir()
	writeTestModel(t, single, 0)
	data, err := os.ReadFile(filepath.Join(single, checkpoint.SingleFileName))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, checkpoint.SingleFileName), data, 0o644))
}

func TestMergeCommandAmbiguousBase(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 8<<10)
	writeTestAdapter(t, adapterDir, base, baseDir)
	addStaleSingleFile(t, baseDir)

	_, stderr, err := runCLI(t, "merge", "--base", baseDir, "--adapter", adapterDir, "--out", filepath.Join(t.TempDir(), "out"))
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, "contains both model.safetensors and model.safetensors.index.json")
	assert.Contains(t, stderr, "pass the file to use as --base")
	assert.NotContains(t, stderr, "OpenModel")

	out := filepath.Join(t.TempDir(), "out")
	stdout, stderr, err := runCLI(t, "merge", "--base", filepath.Join(baseDir, checkpoint.IndexFileName), "--adapter", adapterDir, "--out", out)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "copied from the base: config.json, tokenizer.json")
	m, err := checkpoint.OpenModel(out)
	require.NoError(t, err)
	defer m.Close()
	assert.Len(t, m.Tensors(), 24)
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

// patternSource writes a tensor by repeating block, which is faster than random values
// for a model of hundreds of megabytes.
type patternSource struct{ block []byte }

func (p patternSource) WriteData(w io.Writer, dtype checkpoint.DType, n int64) error {
	remaining := n * int64(dtype.Bits()/8)
	for remaining > 0 {
		k := min(remaining, int64(len(p.block)))
		if _, err := w.Write(p.block[:k]); err != nil {
			return err
		}
		remaining -= k
	}
	return nil
}

// writeLargeMergeInput writes a Qwen3 base with BF16 weights and a rank-256 adapter on
// every projection, which took 3.3 s to merge on one core of an Intel Xeon. The 2 layers of
// hidden size 1024 and intermediate size 3072 have 24 million adapted elements, each a
// sum of 256 products.
func writeLargeMergeInput(t *testing.T, baseDir, adapterDir string) {
	t.Helper()
	cfg, err := model.LoadConfig(goldenModelConfig)
	require.NoError(t, err)
	cfg.HiddenSize, cfg.IntermediateSize, cfg.NumHeads, cfg.NumKVHeads, cfg.HeadDim = 1024, 3072, 8, 2, 128

	block := make([]byte, 1<<16)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range block {
		block[i] = byte(rng.UintN(256)) & 0x3f // small BF16 values, with no NaN or infinity
	}
	var tensors []checkpoint.Tensor
	for _, p := range cfg.Params() {
		tensors = append(tensors, checkpoint.Tensor{Name: p.Name, DType: checkpoint.BF16, Shape: p.Shape, Data: patternSource{block}})
	}
	require.NoError(t, checkpoint.WriteModel(baseDir, tensors, checkpoint.ModelOptions{}))
	require.NoError(t, model.SaveConfig(baseDir, cfg, "bfloat16"))

	adapter, err := peft.NewAdapter(peft.Config{Rank: 256, Alpha: 16, TargetModules: model.ProjectionModules()}, cfg)
	require.NoError(t, err)
	require.NoError(t, peft.Write(adapterDir, adapter))
}

// startMerge starts ringtune merge with info logs on stderr and returns the process
// and its stderr.
func startMerge(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(ringtuneBin, append([]string{"merge"}, args...)...)
	cmd.Env = append(os.Environ(), "RINGTUNE_LOG_LEVEL=info")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &stderr
}

// waitForGlob polls until pattern matches a path, and fails the test after timeout.
func waitForGlob(t *testing.T, pattern string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		matches, err := filepath.Glob(pattern)
		require.NoError(t, err)
		if len(matches) > 0 {
			return matches[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no path matches %s after %v", pattern, timeout)
	return ""
}

func TestMergeCommandStopsOnSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 90 MB model and adapter and merges them in a subprocess; skipped with -short")
	}
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	writeLargeMergeInput(t, baseDir, adapterDir)

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			parent := t.TempDir()
			out := filepath.Join(parent, "out")
			cmd, stderr := startMerge(t, "--base", baseDir, "--adapter", adapterDir, "--out", out)
			// The temporary directory appears once the inputs are checked, seconds before
			// the merge could finish.
			waitForGlob(t, filepath.Join(parent, ".out.merging-*"), 20*time.Second)
			require.NoError(t, cmd.Process.Signal(sig))
			signaled := time.Now()

			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			var err error
			select {
			case err = <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
				t.Fatalf("merge still running 5 s after %v; stderr:\n%s", sig, stderr)
			}
			t.Logf("exited %v after the signal", time.Since(signaled))

			requireExitCode(t, err, 1)
			assert.Contains(t, stderr.String(), "merge stopped before it finished (interrupted by signal "+sig.String()+")")
			assert.Contains(t, stderr.String(), "nothing was written to "+out)
			entries, err := os.ReadDir(parent)
			require.NoError(t, err)
			assert.Empty(t, entries, "neither the output nor the temporary directory is left")
		})
	}
}
