package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/device"
)

// stepResultKeys are the documented keys of `bench step --json`.
var stepResultKeys = []string{"tokens_per_s", "step_s", "peak_rss_bytes", "shape", "mode"}

// writeStepConfig writes a small Qwen3 config.json (vocabulary 512, hidden size
// 64, 2 layers) to a new directory and returns the file's path.
func writeStepConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	config := `{
  "model_type": "qwen3",
  "vocab_size": 512,
  "hidden_size": 64,
  "intermediate_size": 128,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "head_dim": 16,
  "max_position_embeddings": 64,
  "rms_norm_eps": 1e-6,
  "rope_theta": 1000000,
  "tie_word_embeddings": true
}`
	require.NoError(t, os.WriteFile(path, []byte(config), 0o644))
	return path
}

// decodeStepResults decodes every JSON value on stdout, which must all be objects.
func decodeStepResults(t *testing.T, stdout string) []map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(stdout)))
	dec.UseNumber()
	var results []map[string]any
	for dec.More() {
		var r map[string]any
		require.NoError(t, dec.Decode(&r), stdout)
		results = append(results, r)
	}
	return results
}

// checkStepResult checks the keys of one result, and that its values fit a
// run of the given shape and mode with tokens = batch × seq per step.
func checkStepResult(t *testing.T, r map[string]any, shape, mode string, tokens float64) {
	t.Helper()
	assert.ElementsMatch(t, stepResultKeys, keysOf(r))
	assert.Equal(t, shape, r["shape"])
	assert.Equal(t, mode, r["mode"])

	tokensPerS, err := r["tokens_per_s"].(json.Number).Float64()
	require.NoError(t, err)
	stepS, err := r["step_s"].(json.Number).Float64()
	require.NoError(t, err)
	rss, err := r["peak_rss_bytes"].(json.Number).Int64()
	require.NoError(t, err)
	assert.Greater(t, stepS, 0.0, "step_s")
	assert.Less(t, stepS, 60.0, "step_s of a 2-layer model")
	assert.InDelta(t, tokens/stepS, tokensPerS, 1e-9*tokensPerS, "tokens_per_s = batch × seq / step_s")
	assert.Greater(t, rss, int64(1<<20), "peak_rss_bytes")
	assert.Less(t, rss, int64(2<<30), "peak_rss_bytes of a 2-layer model")
}

func TestBenchStepJSON(t *testing.T) {
	config := writeStepConfig(t)
	stdout, stderr, err := runCLI(t, "bench", "step", "--shape", config, "--batch", "2", "--seq", "16",
		"--steps", "2", "--warmup", "1", "--threads", "1", "--json")
	require.NoError(t, err, stderr)

	results := decodeStepResults(t, stdout)
	require.Len(t, results, 1, "stdout holds exactly one JSON object")
	checkStepResult(t, results[0], config, "full", 2*16)
	assert.Equal(t, byte('\n'), stdout[len(stdout)-1], "output ends with a newline")
	assert.Equal(t, 1, strings.Count(stdout, "\n"), "one line")
}

func TestBenchStepLoRAOptions(t *testing.T) {
	config := writeStepConfig(t)
	stdout, stderr, err := runCLI(t, "bench", "step", "--shape", config, "--mode", "lora", "--lora-targets", "all",
		"--lora-rank", "4", "--lora-alpha", "8", "--frozen-bf16", "--checkpointing",
		"--batch", "2", "--seq", "16", "--steps", "2", "--json")
	require.NoError(t, err, stderr)

	results := decodeStepResults(t, stdout)
	require.Len(t, results, 1, "stdout holds exactly one JSON object")
	checkStepResult(t, results[0], config, "lora", 2*16)
}

func TestBenchStepModeList(t *testing.T) {
	config := writeStepConfig(t)
	stdout, stderr, err := runCLI(t, "bench", "step", "--shape", config, "--mode", "full,lora", "--frozen-bf16",
		"--batch", "1", "--seq", "8", "--steps", "2", "--json")
	require.NoError(t, err, stderr)

	results := decodeStepResults(t, stdout)
	require.Len(t, results, 2, "one JSON object per configuration")
	checkStepResult(t, results[0], config, "full", 8)
	checkStepResult(t, results[1], config, "lora", 8)
	assert.Equal(t, 2, strings.Count(stdout, "\n"), "one line per configuration")
}

func TestBenchStepTable(t *testing.T) {
	config := writeStepConfig(t)
	stdout, stderr, err := runCLI(t, "bench", "step", "--shape", config, "--mode", "lora", "--frozen-bf16",
		"--batch", "2", "--seq", "16", "--steps", "2")
	require.NoError(t, err, stderr)

	assert.Contains(t, stdout, "median of 2 steps after 1 warm-up")
	assert.Contains(t, stdout, "tokens/s")
	assert.Contains(t, stdout, "peak RSS(GiB)")
	assert.Contains(t, stdout, "lora+bf16")
	assert.Contains(t, stdout, "2×16")
}

func TestBenchStepBadFlags(t *testing.T) {
	config := writeStepConfig(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--shape", "huge"}, "--shape huge: huge not found"},
		{[]string{"--shape", ""}, "--shape is empty"},
		{[]string{"--mode", "half"}, `unknown training mode "half": use full or lora`},
		{[]string{"--mode", "lora,lora"}, "--mode lists lora twice"},
		{[]string{"--device", "tpu"}, `invalid --device "tpu": use cpu, cuda or cuda:N`},
		{[]string{"--device", "cuda:x"}, `invalid --device "cuda:x": the GPU ordinal after "cuda:" must be an integer`},
		{[]string{"--batch", "0"}, "invalid --batch 0: use 1 or more"},
		{[]string{"--seq", "1"}, "invalid --seq 1: next-token loss needs at least 2 tokens"},
		{[]string{"--seq", "65"}, "--seq 65 exceeds max_position_embeddings 64"},
		{[]string{"--steps", "0"}, "invalid --steps 0: use 1 or more"},
		{[]string{"--warmup", "-1"}, "invalid --warmup -1: use 0 or more"},
		{[]string{"--threads", "-2"}, "invalid --threads -2: use 0 or more"},
		{[]string{"--lr", "-1"}, "invalid --lr -1"},
		{[]string{"--mode", "lora", "--lora-rank", "0"}, "invalid --lora-rank 0"},
		{[]string{"--mode", "lora", "--lora-alpha", "0"}, "invalid --lora-alpha 0"},
		{[]string{"--mode", "lora", "--lora-targets", "q_proj,lm_head"}, `LoRA target module "lm_head" is not a projection`},
		{[]string{"--mode", "lora", "--lora-targets", ","}, "LoRA needs at least one target module"},
		{[]string{"--frozen-bf16"}, "--frozen-bf16 needs --mode lora"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		args := append([]string{"bench", "step", "--shape", config, "--steps", "1", "--warmup", "0", "--json"}, tc.args...)
		stdout, stderr, err := runCLI(t, args...)
		requireExitCode(t, err, 1)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
		assert.Empty(t, stdout, "%v", tc.args)
	}
}

func TestBenchStepCUDAUnavailable(t *testing.T) {
	config := writeStepConfig(t)
	stdout, stderr, err := runCLI(t, "bench", "step", "--shape", config, "--batch", "2", "--seq", "16", "--steps", "1", "--warmup", "0", "--json", "--device", "cuda:0")
	if err == nil {
		t.Skip("this host has CUDA device 0")
	}
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, "--device cuda:0: ")
	if !device.CUDABuilt {
		assert.Contains(t, stderr, "built with -tags nocuda")
	}
	assert.Empty(t, stdout)
}

func TestBenchStepCPUProfile(t *testing.T) {
	config := writeStepConfig(t)
	profile := filepath.Join(t.TempDir(), "step.prof")
	cmd := exec.Command(ringtuneBin, "bench", "step", "--shape", config, "--batch", "1", "--seq", "8",
		"--steps", "2", "--json")
	cmd.Env = append(os.Environ(), "RINGTUNE_LOG_LEVEL=warn", "RINGTUNE_CPUPROFILE="+profile)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))

	info, err := os.Stat(profile)
	require.NoError(t, err, "profile file")
	assert.Positive(t, info.Size(), "profile size")
}
