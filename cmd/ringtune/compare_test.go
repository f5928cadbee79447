package main

import (
	"encoding/json"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/node"
)

// fullParams counts every value of a Qwen3 model with tied embeddings: the
// embedding, per layer two norms, the attention and MLP projections and the
// q and k norms, and the final norm.
func fullParams(cfg model.Config) int64 {
	perLayer := 2*cfg.HiddenSize + // input and post-attention norms
		cfg.HiddenSize*cfg.NumHeads*cfg.HeadDim*2 + // q, o
		cfg.HiddenSize*cfg.NumKVHeads*cfg.HeadDim*2 + // k, v
		2*cfg.HeadDim + // q_norm, k_norm
		3*cfg.HiddenSize*cfg.IntermediateSize // gate, up, down
	return int64(cfg.VocabSize*cfg.HiddenSize) + int64(cfg.NumLayers)*int64(perLayer) + int64(cfg.HiddenSize)
}

// sumFileSizes adds up the sizes of the regular files under dir.
func sumFileSizes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil && info.Mode().IsRegular() {
			total += info.Size()
		}
		return err
	}))
	return total
}

func readCompareReport(t *testing.T, out string) compareReport {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(out, compareJSONFile))
	require.NoError(t, err)
	var report compareReport
	require.NoError(t, json.Unmarshal(raw, &report))
	return report
}

// requireMetric returns the values of key for both runs.
func requireMetric(t *testing.T, report *compareReport, key string) (full, lora *measuredValue) {
	t.Helper()
	m := report.metric(key)
	require.NotNil(t, m, "report.json has no metric %s", key)
	require.NotNil(t, m.Full, "metric %s has no full value", key)
	require.NotNil(t, m.LoRA, "metric %s has no LoRA value", key)
	return m.Full, m.LoRA
}

func TestCompareTinyJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	const nodes = 2
	job := writeTrainJob(t, dir, trainJob{mode: "lora", base: base, train: writeTrainData(t, dir, 60),
		output: filepath.Join(dir, "job-out"), nodes: 1, micro: 2, accum: 1, steps: 4})
	out := filepath.Join(dir, "compare")

	stdout, stderr, err := runCLI(t, "compare", "--config", job, "--nodes", "2", "--out", out, "--optimizer-lr", "0.002")
	require.NoError(t, err, "stderr:\n%s", stderr)
	assert.Contains(t, stdout, "| measured | full | LoRA | full : LoRA |")
	assert.FileExists(t, filepath.Join(out, compareReportFile))
	assert.NoDirExists(t, filepath.Join(dir, "job-out"), "compare wrote into the config's output folder")

	// Both runs trained with the passed flags: the resolved configs carry them.
	for _, mode := range compareModes {
		resolved, err := os.ReadFile(filepath.Join(out, mode, "job.yaml"))
		require.NoError(t, err)
		assert.Contains(t, string(resolved), "mode: "+mode)
		assert.Contains(t, string(resolved), "lr: 0.002", "%s run", mode)
		assert.Len(t, readMetrics(t, filepath.Join(out, mode)), 4, "%s run", mode)
	}

	report := readCompareReport(t, out)
	assert.Equal(t, nodes, report.Nodes)
	require.Len(t, report.Runs, 2)
	for _, run := range report.Runs {
		assert.Empty(t, run.Error, "%s run", run.Mode)
		assert.Greater(t, run.WallSeconds, 0.0, "%s run", run.Mode)
	}

	// Parameter counts match the model's shape.
	wantFull, wantLoRA := fullParams(trainTestConfig), loraParams(trainTestConfig, 4)
	full, lora := requireMetric(t, &report, "trainable_params")
	assert.Equal(t, float64(wantFull), full.Value)
	assert.Equal(t, float64(wantLoRA), lora.Value)
	assert.Equal(t, filepath.Join(out, "full", "summary.json"), full.Source)
	full, lora = requireMetric(t, &report, "total_params")
	assert.Equal(t, float64(wantFull), full.Value)
	assert.Equal(t, float64(wantFull+wantLoRA), lora.Value)
	full, lora = requireMetric(t, &report, "trainable_percent")
	assert.InDelta(t, 100, full.Value, 1e-9)
	assert.InDelta(t, 100*float64(wantLoRA)/float64(wantFull+wantLoRA), lora.Value, 1e-9)
	ratio := report.metric("trainable_params").FullToLoRA
	require.NotNil(t, ratio)
	assert.InDelta(t, float64(wantFull)/float64(wantLoRA), *ratio, 1e-9)

	// Sizes on disk are the sums of the files' sizes.
	full, lora = requireMetric(t, &report, "final_output_bytes")
	assert.Equal(t, float64(sumFileSizes(t, filepath.Join(out, "full", "model"))), full.Value)
	assert.Equal(t, float64(sumFileSizes(t, filepath.Join(out, "lora", "adapter"))), lora.Value)
	full, lora = requireMetric(t, &report, "last_checkpoint_bytes")
	for mode, value := range map[string]*measuredValue{"full": full, "lora": lora} {
		checkpoint := filepath.Join(out, mode, "checkpoints", "step-00000004")
		assert.Equal(t, checkpoint, value.Source, "%s run", mode)
		assert.Equal(t, float64(sumFileSizes(t, checkpoint)), value.Value, "%s run", mode)
	}
	assert.Greater(t, full.Value, float64(sumFileSizes(t, filepath.Join(out, "full", "model")))/2, "the checkpoint lacks the optimizer state")

	// A ring of 2 nodes sends 2(N-1)/N of the fp32 gradients per node and step.
	full, lora = requireMetric(t, &report, "bytes_sent_per_node")
	assert.InEpsilon(t, float64(2*(nodes-1))/nodes*4*float64(wantFull), full.Value, 0.02)
	assert.InEpsilon(t, float64(2*(nodes-1))/nodes*4*float64(wantLoRA), lora.Value, 0.02)

	// Timings, memory and evaluation come from metrics.jsonl.
	for _, key := range []string{"peak_memory_bytes", "compute_s", "compute_plus_exposed_s", "step_s", "tokens_per_s", "eval_loss", "eval_perplexity", "wall_s"} {
		full, lora := requireMetric(t, &report, key)
		assert.Greater(t, full.Value, 0.0, "%s of the full run", key)
		assert.Greater(t, lora.Value, 0.0, "%s of the LoRA run", key)
	}
	full, _ = requireMetric(t, &report, "eval_loss")
	lines := readMetrics(t, filepath.Join(out, "full"))
	require.NotNil(t, lines[3].EvalLoss)
	assert.Equal(t, *lines[3].EvalLoss, full.Value, "the eval loss is not the one after the last step")

	// Every chart is a PNG.
	assert.ElementsMatch(t, []string{compareLossChart, compareStepChart, compareBytesChart, compareMemoryChart}, report.Charts)
	for _, name := range report.Charts {
		f, err := os.Open(filepath.Join(out, name))
		require.NoError(t, err)
		img, err := png.Decode(f)
		f.Close()
		require.NoError(t, err, name)
		assert.Greater(t, img.Bounds().Dx(), 100, name)
	}

	// A second comparison into the same folder would mix with the first.
	_, stderr, err = runCLI(t, "compare", "--config", job, "--out", out)
	require.Error(t, err)
	assert.Contains(t, stderr, "already contains a full run of an earlier comparison")

	// With one run failed, the report covers the other and names the failure.
	runs := []*compareRun{
		{Mode: "full", Output: filepath.Join(out, "full"), WallSeconds: 1},
		{Mode: "lora", Output: filepath.Join(out, "lora"), Error: "exit status 1"},
	}
	reportJob := &jobconfig.Config{Model: jobconfig.ModelConfig{Base: base}, Cluster: jobconfig.ClusterConfig{Nodes: nodes}}
	partial := filepath.Join(dir, "partial")
	require.NoError(t, os.MkdirAll(partial, 0o755))
	loaded, err := writeCompareReport(partial, job, reportJob, runs)
	require.NoError(t, err)
	require.NotNil(t, loaded)
	markdown, err := os.ReadFile(filepath.Join(partial, compareReportFile))
	require.NoError(t, err)
	assert.Contains(t, string(markdown), "failed: exit status 1")
	full = loaded.metric("trainable_params").Full
	require.NotNil(t, full)
	assert.Equal(t, float64(wantFull), full.Value)
	assert.Nil(t, loaded.metric("trainable_params").LoRA)
	assert.Nil(t, loaded.metric("trainable_params").FullToLoRA)
	assert.Contains(t, failedRunsError(runs, partial).Error(), "the lora run failed")
}

func TestCompareRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	base := newTrainBase(t)
	job := writeTrainJob(t, dir, trainJob{mode: "full", base: base, train: writeTrainData(t, dir, 20),
		output: filepath.Join(dir, "out"), nodes: 1, micro: 2, accum: 1, steps: 2})
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--model-init", "random"}, "compare needs a pretrained base, but model.init is random"},
		{[]string{"--set", "model.init=random"}, "compare needs a pretrained base, but model.init is random"},
		{[]string{"--mode", "full"}, "--mode is not accepted"},
		{[]string{"--set", "mode=lora"}, "--set mode=lora is not accepted"},
		{[]string{"--output", dir}, "choose DIR with --out"},
		{[]string{"--nodes", "0"}, "invalid --nodes 0"},
		{[]string{"--lora-rank=-1"}, "lora.rank"},
	}
	for _, tc := range cases {
		out := filepath.Join(dir, "compare")
		_, stderr, err := runCLI(t, append([]string{"compare", "--config", job, "--out", out}, tc.args...)...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
		assert.NoDirExists(t, out, "%v", tc.args)
	}
}

func TestCompareRejectsRandomInitConfig(t *testing.T) {
	dir := t.TempDir()
	base := newTrainBase(t)
	job := writeTrainJob(t, dir, trainJob{mode: "full", base: base, train: writeTrainData(t, dir, 20),
		output: filepath.Join(dir, "out"), nodes: 1, micro: 2, accum: 1, steps: 2})
	raw, err := os.ReadFile(job)
	require.NoError(t, err)
	random := filepath.Join(dir, "random.yaml")
	require.NoError(t, os.WriteFile(random, []byte(strings.Replace(string(raw), "model:\n", "model:\n  init: random\n", 1)), 0o644))

	// The config is a valid full-mode job that trains from random weights.
	cfg, err := jobconfig.Load(random)
	require.NoError(t, err)
	assert.Equal(t, "random", cfg.Model.Init)
	require.NoError(t, cfg.Validate())

	out := filepath.Join(dir, "compare")
	_, stderr, err := runCLI(t, "compare", "--config", random, "--out", out)
	require.Error(t, err)
	assert.Contains(t, stderr, "compare needs a pretrained base, but model.init is random")
	assert.NoDirExists(t, out)
}

func TestCompareMedianSkipsRecoveredLines(t *testing.T) {
	f := &runFiles{metricsPath: "metrics.jsonl", lines: []node.MetricsLine{
		{Step: 0},
		{Step: 1, StepSeconds: 2},
		{Step: 2, StepSeconds: 4},
		{Step: 3, Recovered: true},
	}}

	got, ok := f.medianOf(func(l node.MetricsLine) float64 { return l.StepSeconds })

	require.True(t, ok)
	assert.Equal(t, 3.0, got.Value, "a recovered line has no step time of its own")
}
