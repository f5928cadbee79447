package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/kernels/cpu"
	"github.com/ringtune/ringtune/kernels/device"
	"github.com/ringtune/ringtune/model"
)

// stepResultKeys are the documented keys of `bench step --json`.
var stepResultKeys = []string{"tokens_per_s", "step_s", "peak_rss_bytes", "shape", "mode",
	"flops_per_token", "model_tflops", "peak_tflops", "mfu", "peak_device_bytes"}

// Model FLOPs per token of the config of writeStepConfig, worked out by hand.
// Its shape is hidden 64, MLP 128, 2 layers of 4 query and 2 key/value heads
// of 16, and a vocabulary of 512 whose embedding is tied to the LM head.
const (
	// stepConfigWeights are the weights of the matrix products: per layer
	// q_proj 64×64, k_proj and v_proj 32×64, o_proj 64×64 and gate_proj,
	// up_proj and down_proj 128×64, then the LM head 512×64.
	stepConfigWeights = 2*(64*64+2*32*64+64*64+3*128*64) + 512*64
	// stepConfigAdapters are the weights of rank-8 adapters on q_proj, k_proj,
	// v_proj and o_proj, with A of 8×in and B of out×8.
	stepConfigAdapters = 2 * ((8*64 + 64*8) + 2*(8*64+32*8) + (8*64 + 64*8))
)

// stepConfigFLOPs returns the FLOPs per token of the config of
// writeStepConfig at rows of seq tokens, in full or LoRA mode with the default
// adapters.
func stepConfigFLOPs(lora bool, seq int) int64 {
	attention := int64(6 * 2 * seq * (4 * 16))
	if lora {
		return 4*stepConfigWeights + 6*stepConfigAdapters + attention
	}
	return 6*stepConfigWeights + attention
}

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

	flopsPerToken, err := r["flops_per_token"].(json.Number).Int64()
	require.NoError(t, err)
	modelTFLOPS, err := r["model_tflops"].(json.Number).Float64()
	require.NoError(t, err)
	want := float64(flopsPerToken) * tokensPerS / 1e12
	assert.InDelta(t, want, modelTFLOPS, 1e-9*want, "model_tflops = flops_per_token × tokens_per_s / 10¹²")

	// The CPU backend counts its tensor buffers: at least the weights, which
	// --frozen-bf16 stores in 2 bytes each.
	deviceBytes, err := r["peak_device_bytes"].(json.Number).Int64()
	require.NoError(t, err)
	assert.Greater(t, deviceBytes, int64(2*stepConfigWeights), "peak_device_bytes")
	assert.Less(t, deviceBytes, rss, "peak_device_bytes counts a part of the process's memory")
}

// checkStepMFU checks peak_tflops and mfu of one result of a run with
// --peak-tflops peak, or their null values when peak is 0.
func checkStepMFU(t *testing.T, r map[string]any, peak float64) {
	t.Helper()
	if peak == 0 {
		assert.Nil(t, r["peak_tflops"], "peak_tflops without --peak-tflops")
		assert.Nil(t, r["mfu"], "mfu without --peak-tflops")
		return
	}
	gotPeak, err := r["peak_tflops"].(json.Number).Float64()
	require.NoError(t, err)
	assert.Equal(t, peak, gotPeak, "peak_tflops")
	modelTFLOPS, err := r["model_tflops"].(json.Number).Float64()
	require.NoError(t, err)
	mfu, err := r["mfu"].(json.Number).Float64()
	require.NoError(t, err)
	assert.InDelta(t, modelTFLOPS/peak, mfu, 1e-9*mfu, "mfu = model_tflops / peak_tflops")
}

// flopsOf returns the flops_per_token of a result.
func flopsOf(t *testing.T, r map[string]any) int64 {
	t.Helper()
	flops, err := r["flops_per_token"].(json.Number).Int64()
	require.NoError(t, err)
	return flops
}

func TestBenchStepJSON(t *testing.T) {
	config := writeStepConfig(t)
	stdout, stderr, err := runCLI(t, "bench", "step", "--shape", config, "--batch", "2", "--seq", "16",
		"--steps", "2", "--warmup", "1", "--threads", "1", "--json")
	require.NoError(t, err, stderr)

	results := decodeStepResults(t, stdout)
	require.Len(t, results, 1, "stdout holds exactly one JSON object")
	checkStepResult(t, results[0], config, "full", 2*16)
	checkStepMFU(t, results[0], 0)
	assert.Equal(t, stepConfigFLOPs(false, 16), flopsOf(t, results[0]))
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
	assert.Equal(t, stepConfigFLOPs(false, 8), flopsOf(t, results[0]), "full")
	assert.Equal(t, stepConfigFLOPs(true, 8), flopsOf(t, results[1]), "lora")
	assert.Equal(t, 2, strings.Count(stdout, "\n"), "one line per configuration")
}

func TestBenchStepPeakTFLOPS(t *testing.T) {
	config := writeStepConfig(t)
	// Each configuration runs in a child process, which must get --peak-tflops.
	stdout, stderr, err := runCLI(t, "bench", "step", "--shape", config, "--mode", "full,lora",
		"--batch", "1", "--seq", "8", "--steps", "2", "--peak-tflops", "0.25", "--json")
	require.NoError(t, err, stderr)

	results := decodeStepResults(t, stdout)
	require.Len(t, results, 2, "one JSON object per configuration")
	for i, mode := range []string{"full", "lora"} {
		checkStepResult(t, results[i], config, mode, 8)
		checkStepMFU(t, results[i], 0.25)
	}
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
	assert.Contains(t, stdout, "TFLOP/s")
	assert.Contains(t, stdout, "tensors(GiB)")
	assert.NotContains(t, stdout, "MFU", "no MFU column without --peak-tflops")
}

func TestBenchStepTableMFU(t *testing.T) {
	config := writeStepConfig(t)
	stdout, stderr, err := runCLI(t, "bench", "step", "--shape", config, "--batch", "2", "--seq", "16",
		"--steps", "2", "--peak-tflops", "0.25")
	require.NoError(t, err, stderr)

	assert.Contains(t, stdout, "# MFU = TFLOP/s / 0.25 (--peak-tflops)")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	header := strings.Fields(lines[len(lines)-2])
	row := strings.Fields(lines[len(lines)-1])
	// The columns up to MFU are single words, so MFU has the same index in
	// the header and the row.
	column := slices.Index(header, "MFU")
	require.Positive(t, column, "MFU column in %q", lines[len(lines)-2])
	require.Greater(t, len(row), column, "values in %q", lines[len(lines)-1])
	assert.True(t, strings.HasSuffix(row[column], "%"), "MFU %q is a percentage", row[column])
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
		{[]string{"--peak-tflops", "-1"}, "invalid --peak-tflops -1: use the reference rate in TFLOP/s, or 0 for no MFU"},
		{[]string{"--peak-tflops", "Inf"}, "invalid --peak-tflops +Inf"},
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

func TestTrainingFLOPsPerToken(t *testing.T) {
	small, err := model.ResolveConfig(writeStepConfig(t))
	require.NoError(t, err)
	qwen, err := model.Preset("qwen3-0.6b")
	require.NoError(t, err)

	// Qwen3-0.6B: hidden 1024, MLP 3072, 28 layers of 16 query and 8
	// key/value heads of 128, and a vocabulary of 151936 tied to the LM head.
	const (
		qwenWeights  = 28*(2048*1024+2*1024*1024+1024*2048+3*3072*1024) + 151936*1024
		qwenAdapters = 28 * ((8*1024 + 2048*8) + 2*(8*1024+1024*8) + (8*2048 + 1024*8))
		// The norms are the parameters outside the products: per layer two of
		// 1024 and two of 128, and the final norm.
		qwenNorms = 28*(2*1024+2*128) + 1024
	)
	require.Equal(t, int64(qwenWeights+qwenNorms), qwen.NumParams(), "the preset is the shape worked out here")
	require.Equal(t, int64(qwenAdapters), qwen.NumLoRAParams(model.DefaultLoRA()))
	require.Equal(t, 595_984_384, qwenWeights)
	require.Equal(t, 2_293_760, qwenAdapters)

	full := model.Options{Mode: model.ModeFull}
	lora := model.Options{Mode: model.ModeLoRA, LoRA: model.DefaultLoRA()}
	allRank4 := model.Options{Mode: model.ModeLoRA, LoRA: model.LoRAConfig{Rank: 4, Alpha: 8, TargetModules: model.ProjectionModules()}}
	// Rank-4 adapters on all seven projections of the small config.
	const smallAllRank4 = 2 * ((4*64 + 64*4) + 2*(4*64+32*4) + (4*64 + 64*4) + 2*(4*64+128*4) + (4*128 + 64*4))
	cases := []struct {
		name string
		cfg  model.Config
		opts model.Options
		seq  int
		want int64
	}{
		{"small full seq 16", small, full, 16, 6*stepConfigWeights + 6*2*16*64},
		{"small lora seq 16", small, lora, 16, 4*stepConfigWeights + 6*stepConfigAdapters + 6*2*16*64},
		{"small lora all rank 4", small, allRank4, 16, 4*stepConfigWeights + 6*smallAllRank4 + 6*2*16*64},
		{"small full seq 64", small, full, 64, 6*stepConfigWeights + 6*2*64*64},
		// Totals worked out by hand: 6·595,984,384 + 6·28·1024·2048, and
		// 4·595,984,384 + 6·2,293,760 + 6·28·1024·2048.
		{"qwen3-0.6b full seq 1024", qwen, full, 1024, 3_928_227_840},
		{"qwen3-0.6b lora seq 1024", qwen, lora, 1024, 2_750_021_632},
		{"qwen3-0.6b full seq 2048", qwen, full, 2048, 6*qwenWeights + 6*28*2048*(16*128)},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, trainingFLOPsPerToken(tc.cfg, tc.opts, tc.seq), tc.name)
	}
	assert.Equal(t, int64(651_264), stepConfigFLOPs(false, 16), "the small config's full count, by hand")
	assert.Equal(t, int64(481_280), stepConfigFLOPs(true, 16), "the small config's LoRA count, by hand")

	// Storage and recomputation do not change the model's FLOPs.
	memorySaving := lora
	memorySaving.FrozenBF16, memorySaving.Checkpointing = true, true
	assert.Equal(t, trainingFLOPsPerToken(qwen, lora, 1024), trainingFLOPsPerToken(qwen, memorySaving, 1024),
		"--frozen-bf16 and --checkpointing")

	// An untied LM head is a product like the tied one, and the embedding is a lookup.
	untied := small
	untied.TieWordEmbeddings = false
	assert.Equal(t, trainingFLOPsPerToken(small, full, 16), trainingFLOPsPerToken(untied, full, 16), "untied embedding")
}

// TestStepPeakDeviceBytesCPU checks that on the CPU backend peak_device_bytes
// is exactly the buffers of the model and the optimizer: the steps allocate
// no buffer of their own.
func TestStepPeakDeviceBytesCPU(t *testing.T) {
	cfg, err := model.ResolveConfig(writeStepConfig(t))
	require.NoError(t, err)
	for _, mode := range []model.Mode{model.ModeFull, model.ModeLoRA} {
		opts := model.Options{Mode: mode, MaxBatch: 2, MaxSeq: 16}
		trainable := cfg.NumParams()
		if mode == model.ModeLoRA {
			opts.LoRA = model.DefaultLoRA()
			trainable = cfg.NumLoRAParams(opts.LoRA)
		}

		// Count the buffers of a model and optimizer built on a backend of their own.
		be, err := cpu.New(cpu.Options{Workers: 1})
		require.NoError(t, err)
		m, err := model.New(be, cfg, opts)
		require.NoError(t, err)
		modelBytes := be.AllocatedBytes()
		opt, err := model.NewAdamW(m, model.DefaultAdamW())
		require.NoError(t, err)
		optimizerBytes := be.AllocatedBytes() - modelBytes
		opt.Close()
		m.Close()
		assert.Zero(t, be.AllocatedBytes(), "%s: Close frees every buffer", mode)
		require.NoError(t, be.Close())

		assert.Equal(t, 8*trainable, optimizerBytes, "%s: two fp32 AdamW moments per trainable parameter", mode)
		// fp32 weights, and an fp32 value (LoRA adapters) and gradient per
		// trainable parameter; the rest are activations.
		minModelBytes := 4*cfg.NumParams() + 4*trainable
		if mode == model.ModeLoRA {
			minModelBytes += 4 * trainable
		}
		assert.GreaterOrEqual(t, modelBytes, minModelBytes, "%s: weights and gradients", mode)

		p := stepParams{shape: "test", cfg: cfg, opts: opts, batch: 2, seq: 16, steps: 3, warmup: 1,
			device: device.Spec{Kind: device.CPU}, seed: 1, lr: 1e-4}
		r, err := runStepConfig(context.Background(), p)
		require.NoError(t, err)
		require.NotNil(t, r.PeakDeviceBytes, "%s: the CPU backend counts its buffers", mode)
		assert.Equal(t, modelBytes+optimizerBytes, *r.PeakDeviceBytes, "%s: model and optimizer buffers", mode)
	}
}
