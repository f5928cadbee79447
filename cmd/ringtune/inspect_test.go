package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/model"
)

// decodeInspectJSON checks that stdout holds exactly one JSON object and returns it.
func decodeInspectJSON(t *testing.T, stdout string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(stdout)))
	dec.UseNumber()
	var out map[string]any
	require.NoError(t, dec.Decode(&out), stdout)
	assert.False(t, dec.More(), "stdout holds more than one JSON value")
	return out
}

func keysOf(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

var commonInspectKeys = []string{"kind", "path", "files", "tensors", "parameters", "dtypes", "weights_bytes", "size_bytes", "config"}

// goldenParams is the parameter count of the golden config: embedding 250×48, per
// layer 2·48 + 16·2 norms, 64·48 + 2·32·48 + 48·64 attention and 3·80·48 MLP, and the
// final norm.
const goldenParams = 250*48 + 2*(2*48+2*16+64*48+2*32*48+48*64+3*80*48) + 48

func TestInspectModelJSON(t *testing.T) {
	dir := t.TempDir()
	writeTestModel(t, dir, 0)
	stdout, stderr, err := runCLI(t, "inspect", dir, "--json")
	require.NoError(t, err, stderr)

	out := decodeInspectJSON(t, stdout)
	assert.ElementsMatch(t, append(commonInspectKeys, "config_parameters", "config_mismatches"), keysOf(out))
	assert.Equal(t, "model", out["kind"])
	assert.Equal(t, dir, out["path"])
	assert.Equal(t, []any{"model.safetensors"}, out["files"])
	assert.Equal(t, json.Number("24"), out["tensors"])
	assert.Equal(t, json.Number(jsonInt(goldenParams)), out["parameters"])
	assert.Equal(t, json.Number(jsonInt(goldenParams)), out["config_parameters"])
	assert.Equal(t, []any{}, out["config_mismatches"])

	dtypes := out["dtypes"].(map[string]any)
	require.Contains(t, dtypes, "BF16")
	bf16 := dtypes["BF16"].(map[string]any)
	assert.Equal(t, json.Number("24"), bf16["tensors"])
	assert.Equal(t, json.Number(jsonInt(2*goldenParams)), bf16["bytes"])

	weights, err := os.Stat(filepath.Join(dir, "model.safetensors"))
	require.NoError(t, err)
	assert.Equal(t, json.Number(jsonInt(weights.Size())), out["weights_bytes"])
	size, _ := out["size_bytes"].(json.Number).Int64()
	assert.Greater(t, size, weights.Size(), "config.json and tokenizer.json count too")

	config := out["config"].(map[string]any)
	assert.Equal(t, "qwen3", config["model_type"])
	assert.Equal(t, json.Number("2"), config["num_hidden_layers"])
	assert.Equal(t, json.Number("16"), config["head_dim"])
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestInspectModelText(t *testing.T) {
	dir := t.TempDir()
	writeTestModel(t, dir, 8<<10)
	stdout, stderr, err := runCLI(t, "inspect", dir)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "qwen3: 2 layers, hidden 48, intermediate 80, 4 heads (2 key/value) of 16, vocab 250, tied embeddings")
	assert.Contains(t, stdout, "model.safetensors.index.json")
	assert.Contains(t, stdout, "tensors     24")
	assert.Contains(t, stdout, "the weights have every tensor of config.json with its shape, and no other tensors")
	assert.Contains(t, stdout, "BF16  24 tensors")
}

func TestInspectModelMismatch(t *testing.T) {
	dir := t.TempDir()
	writeTestModel(t, dir, 0)
	config, err := os.ReadFile(goldenModelConfig)
	require.NoError(t, err)
	config = bytes.Replace(config, []byte(`"intermediate_size": 80`), []byte(`"intermediate_size": 96`), 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644))

	stdout, stderr, err := runCLI(t, "inspect", dir)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "model.layers.0.mlp.gate_proj.weight: shape [80 48], config.json implies [96 48]")
}

func TestInspectModelExtraTensor(t *testing.T) {
	dir := t.TempDir()
	writeTestModel(t, dir, 0)
	addBogusTensor(t, dir)

	stdout, stderr, err := runCLI(t, "inspect", dir, "--json")
	require.NoError(t, err, stderr)
	out := decodeInspectJSON(t, stdout)
	assert.Equal(t, []any{"model.layers.9.mlp.bogus.weight: not a parameter of the Qwen3 model that config.json describes (2 layers, tie_word_embeddings true)"},
		out["config_mismatches"])

	stdout, stderr, err = runCLI(t, "inspect", dir)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "mismatch    model.layers.9.mlp.bogus.weight: not a parameter")
	assert.NotContains(t, stdout, "no other tensors")
	assert.Contains(t, stdout, "F32   1 tensor, 4 parameters", "the bogus tensor is the only F32 one")
}

func TestInspectJSONPaths(t *testing.T) {
	dir := t.TempDir()
	writeTestModel(t, dir, 8<<10)

	for _, name := range []string{"config.json", "model.safetensors.index.json"} {
		path := filepath.Join(dir, name)
		stdout, stderr, err := runCLI(t, "inspect", path, "--json")
		require.NoError(t, err, stderr)
		out := decodeInspectJSON(t, stdout)
		assert.Equal(t, "model", out["kind"], name)
		assert.Equal(t, path, out["path"], name)
		assert.Equal(t, json.Number("24"), out["tensors"], name)
		assert.Equal(t, []any{}, out["config_mismatches"], name)
		assert.Contains(t, out["files"], "model.safetensors.index.json", name)
	}

	adapterDir := t.TempDir()
	writeTestAdapter(t, adapterDir, mustLoadConfig(t, dir), dir)
	stdout, stderr, err := runCLI(t, "inspect", filepath.Join(adapterDir, "adapter_config.json"), "--json")
	require.NoError(t, err, stderr)
	assert.Equal(t, "adapter", decodeInspectJSON(t, stdout)["kind"])

	other := filepath.Join(dir, "tokenizer.json")
	_, stderr, err = runCLI(t, "inspect", other)
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, "cannot inspect "+other+": PATH must be a model directory, a PEFT adapter directory, a .safetensors file")
	assert.NotContains(t, stderr, "header")
}

func mustLoadConfig(t *testing.T, dir string) model.Config {
	t.Helper()
	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	return cfg
}

func TestInspectAmbiguousWeights(t *testing.T) {
	dir := t.TempDir()
	writeTestModel(t, dir, 8<<10)
	addStaleSingleFile(t, dir)

	for _, path := range []string{dir, filepath.Join(dir, "config.json")} {
		_, stderr, err := runCLI(t, "inspect", path)
		requireExitCode(t, err, 1)
		assert.Contains(t, stderr, dir+" contains both model.safetensors and model.safetensors.index.json", path)
		assert.Contains(t, stderr, "delete the stale one, or pass the file to use as PATH", path)
		assert.NotContains(t, stderr, "OpenModel", path)
	}

	stdout, stderr, err := runCLI(t, "inspect", filepath.Join(dir, "model.safetensors.index.json"))
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "no other tensors", "the index chooses the shards")
}

func TestInspectPyTorchAdapter(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	writeTestAdapter(t, adapterDir, base, baseDir)
	require.NoError(t, os.Rename(filepath.Join(adapterDir, "adapter_model.safetensors"), filepath.Join(adapterDir, "adapter_model.bin")))

	_, stderr, err := runCLI(t, "inspect", adapterDir)
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, filepath.Join(adapterDir, "adapter_model.bin")+": the PyTorch .bin format is not supported")
	assert.Contains(t, stderr, "convert the file to safetensors")
}

func TestInspectAdapterJSON(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	writeTestAdapter(t, adapterDir, base, baseDir)

	stdout, stderr, err := runCLI(t, "inspect", adapterDir, "--json")
	require.NoError(t, err, stderr)
	out := decodeInspectJSON(t, stdout)
	assert.ElementsMatch(t, append(commonInspectKeys, "adapted_modules", "trainable_parameters", "base", "trainable_percent", "peft_trainable_percent"), keysOf(out))
	assert.Equal(t, "adapter", out["kind"])
	assert.Equal(t, json.Number("16"), out["tensors"])
	assert.Equal(t, json.Number("8"), out["adapted_modules"])

	// Per layer: q (4·48 + 64·4), k and v (4·48 + 32·4 each), o (4·64 + 48·4).
	const trainable = 2 * ((4*48 + 64*4) + 2*(4*48+32*4) + (4*64 + 48*4))
	assert.Equal(t, json.Number(jsonInt(trainable)), out["trainable_parameters"])
	assert.Equal(t, out["parameters"], out["trainable_parameters"])

	baseInfo := out["base"].(map[string]any)
	assert.Equal(t, "base_model_name_or_path", baseInfo["source"])
	assert.Equal(t, baseDir, baseInfo["path"])
	assert.Equal(t, json.Number(jsonInt(goldenParams)), baseInfo["parameters"])
	percent, err := out["trainable_percent"].(json.Number).Float64()
	require.NoError(t, err)
	assert.InDelta(t, 100*float64(trainable)/goldenParams, percent, 1e-9)
	peftPercent, err := out["peft_trainable_percent"].(json.Number).Float64()
	require.NoError(t, err)
	assert.InDelta(t, 100*float64(trainable)/(goldenParams+trainable), peftPercent, 1e-9)

	config := out["config"].(map[string]any)
	assert.ElementsMatch(t, []string{"peft_type", "r", "lora_alpha", "lora_dropout", "scaling", "use_rslora", "target_modules",
		"exclude_modules", "layers_to_transform", "base_model_name_or_path", "revision", "peft_version"}, keysOf(config))
	assert.Equal(t, json.Number("4"), config["r"])
	assert.Equal(t, json.Number("2"), config["scaling"])
	assert.Nil(t, config["layers_to_transform"])
}

func TestInspectAdapterWithoutBase(t *testing.T) {
	adapterDir := t.TempDir()
	base := writeTestModel(t, t.TempDir(), 0)
	writeTestAdapter(t, adapterDir, base, "Qwen/Qwen3-0.6B")

	stdout, stderr, err := runCLI(t, "inspect", adapterDir, "--json")
	require.NoError(t, err, stderr)
	out := decodeInspectJSON(t, stdout)
	assert.Nil(t, out["base"])
	assert.Nil(t, out["trainable_percent"])
	assert.Nil(t, out["peft_trainable_percent"])

	stdout, stderr, err = runCLI(t, "inspect", adapterDir)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "Qwen/Qwen3-0.6B is not a local model directory: pass --base DIR")
	assert.Contains(t, stdout, "LoRA r=4, lora_alpha=8, scaling 2 (lora_alpha / r)")
}

func TestInspectAdapterBaseFlag(t *testing.T) {
	baseDir, adapterDir := t.TempDir(), t.TempDir()
	base := writeTestModel(t, baseDir, 0)
	writeTestAdapter(t, adapterDir, base, "Qwen/Qwen3-0.6B")

	stdout, stderr, err := runCLI(t, "inspect", adapterDir, "--base", baseDir)
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "(from --base)")
	assert.Contains(t, stdout, "% of the base (PEFT's trainable%:")

	// The preset's shapes differ from the adapter's, so the check fails.
	_, stderr, err = runCLI(t, "inspect", adapterDir, "--base", "qwen3-0.6b")
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, filepath.Join(adapterDir, "adapter_model.safetensors"))
	assert.Contains(t, stderr, "lora_A.weight\": shape [4 48], expected [4 1024]")
}

func TestInspectSafetensorsFile(t *testing.T) {
	dir := t.TempDir()
	writeTestModel(t, dir, 0)
	stdout, stderr, err := runCLI(t, "inspect", filepath.Join(dir, "model.safetensors"), "--json")
	require.NoError(t, err, stderr)
	out := decodeInspectJSON(t, stdout)
	assert.ElementsMatch(t, []string{"kind", "path", "files", "tensors", "parameters", "dtypes", "weights_bytes", "size_bytes"}, keysOf(out))
	assert.Equal(t, "safetensors", out["kind"])
	assert.Equal(t, out["weights_bytes"], out["size_bytes"])
}

func TestInspectErrors(t *testing.T) {
	emptyDir := t.TempDir()
	badAdapter := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(badAdapter, "adapter_config.json"),
		[]byte(`{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": true}`), 0o644))
	truncated := t.TempDir()
	writeTestModel(t, truncated, 0)
	weights := filepath.Join(truncated, "model.safetensors")
	info, err := os.Stat(weights)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(weights, info.Size()-1))

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no path", nil, "inspect needs one PATH"},
		{"missing path", []string{filepath.Join(emptyDir, "absent")}, "cannot inspect"},
		{"empty directory", []string{emptyDir}, "has neither config.json (a model directory) nor adapter_config.json"},
		{"unsupported option", []string{badAdapter}, `field "use_dora"`},
		{"truncated weights", []string{truncated}, weights},
		{"base for a model", []string{truncated, "--base", "tiny"}, "--base applies to adapter directories only"},
		{"two paths", []string{emptyDir, emptyDir}, "inspect takes one PATH"},
		{"unknown flag", []string{emptyDir, "--verbose"}, "flag provided but not defined: -verbose"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := runCLI(t, append([]string{"inspect"}, tc.args...)...)
			requireExitCode(t, err, 1)
			assert.Contains(t, stderr, tc.want)
		})
	}
}
