package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/jobconfig"
	"github.com/ringtune/ringtune/kernels/device"
	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/node"
)

// trainTestConfig is the model of the end-to-end tests: the tiny tokenizer's
// vocabulary and a few thousand parameters per layer, so a step takes
// milliseconds.
var trainTestConfig = model.Config{
	VocabSize: 1000, HiddenSize: 64, IntermediateSize: 128, NumLayers: 2,
	NumHeads: 4, NumKVHeads: 2, HeadDim: 16, RMSNormEps: 1e-6, RopeTheta: 10000,
	MaxPositionEmbeddings: 256, TieWordEmbeddings: true, InitializerRange: 0.02,
}

// writeTrainData writes n plain text documents of random words, separated by
// blank lines, and returns the file's path.
func writeTrainData(t *testing.T, dir string, n int) string {
	t.Helper()
	words := strings.Fields("the a model token ring rank node step loss gradient bucket adapter train data epoch batch sum mean layer head weight")
	rng := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString("\n\n")
		}
		for j := range 5 + rng.IntN(20) {
			if j > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[rng.IntN(len(words))])
		}
		b.WriteByte('.')
	}
	path := filepath.Join(dir, "train.txt")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	return path
}

// trainJob describes one end-to-end job config.
type trainJob struct {
	mode       string // full or lora
	base       string // model folder
	train      string
	output     string
	nodes      int
	micro      int
	accum      int
	steps      int
	checkpoint int
	extra      string // more YAML, appended
}

func writeTrainJob(t *testing.T, dir string, j trainJob) string {
	t.Helper()
	cfg := fmt.Sprintf(`job_id: e2e
seed: 7
mode: %s
model:
  base: %s
  tokenizer: %s
lora:
  rank: 4
  alpha: 8
  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
data:
  train: %s
  eval_fraction: 0.1
  seq_len: 32
batch:
  micro_batch_size: %d
  grad_accum_steps: %d
optimizer:
  lr: 0.003
  eps: 0.0001
schedule:
  steps: %d
  warmup_steps: 2
eval:
  every_steps: 2
checkpoint:
  every_steps: %d
  keep: 0
cluster:
  nodes: %d
  join_timeout: 60s
output: %s
%s`, j.mode, j.base, mustAbs(t, tinyTokenizerDir), j.train, j.micro, j.accum, j.steps, j.checkpoint, j.nodes, j.output, j.extra)
	path := filepath.Join(dir, fmt.Sprintf("job-%d.yaml", time.Now().UnixNano()))
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o644))
	return path
}

func mustAbs(t *testing.T, path string) string {
	abs, err := filepath.Abs(path)
	require.NoError(t, err)
	return abs
}

// runTrainCLI runs `ringtune train` and returns its stdout.
func runTrainCLI(t *testing.T, configPath string, args ...string) string {
	t.Helper()
	stdout, stderr, err := runCLI(t, append([]string{"train", "--config", configPath}, args...)...)
	require.NoError(t, err, "stderr:\n%s", stderr)
	return stdout
}

// readTensors reads every tensor of the safetensors files in dir.
func readTensors(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no safetensors files in %s", dir)
	out := map[string][]float32{}
	for _, path := range files {
		f, err := checkpoint.Open(path)
		require.NoError(t, err)
		for _, info := range f.Tensors() {
			n := 1
			for _, d := range info.Shape {
				n *= d
			}
			values := make([]float32, n)
			require.NoError(t, f.ReadFloat32(info.Name, values))
			out[info.Name] = values
		}
		f.Close()
	}
	return out
}

// assertTensorsClose checks that two tensor sets have the same names and
// values within tol, relative to the largest magnitude of each tensor.
func assertTensorsClose(t *testing.T, want, got map[string][]float32, tol float64) {
	t.Helper()
	require.Equal(t, len(want), len(got), "tensor count")
	for name, w := range want {
		g, ok := got[name]
		require.True(t, ok, "tensor %s missing", name)
		require.Equal(t, len(w), len(g), "tensor %s length", name)
		var scale, worst float64
		for i := range w {
			scale = max(scale, math.Abs(float64(w[i])))
			worst = max(worst, math.Abs(float64(w[i])-float64(g[i])))
		}
		assert.LessOrEqual(t, worst, tol*max(scale, 1e-6), "tensor %s differs by %g (scale %g)", name, worst, scale)
	}
}

func readMetrics(t *testing.T, output string) []node.MetricsLine {
	t.Helper()
	f, err := os.Open(filepath.Join(output, node.MetricsFile))
	require.NoError(t, err)
	defer f.Close()
	var lines []node.MetricsLine
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		var line node.MetricsLine
		require.NoError(t, json.Unmarshal(scanner.Bytes(), &line), scanner.Text())
		lines = append(lines, line)
	}
	require.NoError(t, scanner.Err())
	return lines
}

func readSummary(t *testing.T, output string) node.Summary {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(output, node.SummaryFile))
	require.NoError(t, err)
	var s node.Summary
	require.NoError(t, json.Unmarshal(raw, &s))
	return s
}

// newTrainBase writes a random base model with the test shape and tokenizer.
func newTrainBase(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "base")
	writeGenerateModel(t, dir, trainTestConfig, true)
	return dir
}

func TestTrainTwoNodesMatchOne(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	for _, mode := range []string{"full", "lora"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			base := newTrainBase(t)
			trainPath := writeTrainData(t, dir, 120)

			// The same global batch of 4 rows: 2 ranks × 2 rows, or 1 rank × 2 micro-batches of 2.
			two := writeTrainJob(t, dir, trainJob{mode: mode, base: base, train: trainPath, output: filepath.Join(dir, "two"), nodes: 2, micro: 2, accum: 1, steps: 6})
			one := writeTrainJob(t, dir, trainJob{mode: mode, base: base, train: trainPath, output: filepath.Join(dir, "one"), nodes: 1, micro: 2, accum: 2, steps: 6})
			runTrainCLI(t, two)
			runTrainCLI(t, one)

			final := "model"
			if mode == "lora" {
				final = "adapter"
			}
			want := readTensors(t, filepath.Join(dir, "one", final))
			got := readTensors(t, filepath.Join(dir, "two", final))
			assertTensorsClose(t, want, got, 1e-4)

			// The run trained: the weights moved away from the base.
			if mode == "full" {
				baseTensors := readTensors(t, base)
				moved := false
				for name, w := range baseTensors {
					for i := range w {
						if w[i] != got[name][i] {
							moved = true
						}
					}
				}
				assert.True(t, moved, "training left every weight unchanged")
			}

			// Both runs log the same losses, step by step.
			oneLines, twoLines := readMetrics(t, filepath.Join(dir, "one")), readMetrics(t, filepath.Join(dir, "two"))
			require.Len(t, twoLines, 6)
			require.Len(t, oneLines, 6)
			for i := range oneLines {
				require.NotNil(t, oneLines[i].Loss)
				require.NotNil(t, twoLines[i].Loss)
				assert.InDelta(t, *oneLines[i].Loss, *twoLines[i].Loss, 1e-4, "loss of step %d", i+1)
				assert.Equal(t, oneLines[i].TargetTokens, twoLines[i].TargetTokens, "target tokens of step %d", i+1)
			}
			assert.NotNil(t, twoLines[5].EvalLoss, "no eval after the last step")
		})
	}
}

func TestTrainStopsAfterNonFiniteSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "full", base: base, train: writeTrainData(t, dir, 60), output: out, nodes: 2, micro: 2, accum: 1, steps: 20,
		extra: "max_nonfinite_steps: 2\n"})

	// A learning rate of 1e30 makes the weights overflow after the first update.
	_, stderr, err := runCLI(t, "train", "--config", job, "--optimizer-lr", "1e30", "--schedule-warmup-steps", "0")
	require.Error(t, err)
	assert.Contains(t, stderr, "2 steps in a row had a non-finite loss or gradient norm")

	lines := readMetrics(t, out)
	require.Len(t, lines, 3, "one finite step, then two skipped ones")
	assert.False(t, lines[0].Skipped)
	for _, line := range lines[1:] {
		assert.True(t, line.Skipped, "step %d", line.Step)
		assert.Nil(t, line.Loss, "step %d logs a non-finite loss as null", line.Step)
	}
}

// loraParams counts the adapter values of trainTestConfig with rank 4 on all
// seven projections: rank × (in + out) per projection and layer.
func loraParams(cfg model.Config, rank int) int64 {
	q := cfg.NumHeads * cfg.HeadDim
	kv := cfg.NumKVHeads * cfg.HeadDim
	h, f := cfg.HiddenSize, cfg.IntermediateSize
	perLayer := (h + q) + (h + kv) + (h + kv) + (q + h) + (h + f) + (h + f) + (f + h)
	return int64(cfg.NumLayers * rank * perLayer)
}

func TestTrainBytesOnTheWire(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	// LoRA's 32 KiB of gradients take the small all-reduce, which sends
	// (N-1)·S per rank, equal to the ring's 2(N-1)/N·S only for N = 2.
	for _, tc := range []struct {
		mode  string
		nodes int
	}{{"full", 2}, {"lora", 2}, {"full", 3}} {
		mode, nodes := tc.mode, tc.nodes
		t.Run(fmt.Sprintf("%s-%d", mode, nodes), func(t *testing.T) {
			dir := t.TempDir()
			base := newTrainBase(t)
			trainPath := writeTrainData(t, dir, 60)
			out := filepath.Join(dir, "out")
			job := writeTrainJob(t, dir, trainJob{mode: mode, base: base, train: trainPath, output: out, nodes: nodes, micro: 2, accum: 1, steps: 3})
			runTrainCLI(t, job)

			summary := readSummary(t, out)
			var params int64
			if mode == "lora" {
				params = loraParams(trainTestConfig, 4)
			} else {
				be := trainTestConfig
				params = int64(be.VocabSize*be.HiddenSize) + int64(be.NumLayers)*int64(
					2*be.HiddenSize+ // norms
						be.HiddenSize*be.NumHeads*be.HeadDim*2+ // q, o
						be.HiddenSize*be.NumKVHeads*be.HeadDim*2+ // k, v
						2*be.HeadDim+ // q_norm, k_norm
						3*be.HiddenSize*be.IntermediateSize) + int64(be.HiddenSize) // final norm
			}
			assert.Equal(t, params, summary.TrainableParams)
			assert.Equal(t, 4*params, summary.GradientBytes)

			// Ring all-reduce sends 2(N-1)/N of the gradient bytes per rank. The
			// target count, the loss and the eval sums add a few bytes more.
			want := float64(2*(nodes-1)) / float64(nodes) * float64(4*params)
			for _, line := range readMetrics(t, out) {
				assert.InEpsilon(t, want, float64(line.BytesSentPerNode), 0.02, "step %d", line.Step)
			}
		})
	}
}

func TestTrainResumeMatchesUninterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	trainPath := writeTrainData(t, dir, 80)

	// LoRA dropout makes the masks depend on the restored dropout step, and
	// two micro-batches per step on the restored sampler position.
	whole := filepath.Join(dir, "whole")
	wholeJob := writeTrainJob(t, dir, trainJob{mode: "lora", base: base, train: trainPath, output: whole, nodes: 2, micro: 2, accum: 2, steps: 8, checkpoint: 3})
	runTrainCLI(t, wholeJob, "--lora-dropout", "0.1")
	for _, step := range []int{3, 6, 8} {
		assert.DirExists(t, filepath.Join(whole, "checkpoints", fmt.Sprintf("step-%08d", step)))
	}

	resumed := filepath.Join(dir, "resumed")
	resumedJob := writeTrainJob(t, dir, trainJob{mode: "lora", base: base, train: trainPath, output: resumed, nodes: 2, micro: 2, accum: 2, steps: 8, checkpoint: 3})
	runTrainCLI(t, resumedJob, "--lora-dropout", "0.1", "--resume", filepath.Join(whole, "checkpoints", "step-00000003"))

	assertTensorsClose(t, readTensors(t, filepath.Join(whole, "adapter")), readTensors(t, filepath.Join(resumed, "adapter")), 0)
	wholeLines, resumedLines := readMetrics(t, whole), readMetrics(t, resumed)
	require.Len(t, resumedLines, 5)
	for i, line := range resumedLines {
		want := wholeLines[3+i]
		assert.Equal(t, want.Step, line.Step)
		require.NotNil(t, line.Loss)
		assert.Equal(t, *want.Loss, *line.Loss, "loss of step %d", line.Step)
	}
}

func TestTrainInterruptKeepsCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	trainPath := writeTrainData(t, dir, 80)
	const steps = 400

	// An uninterrupted run for reference.
	whole := filepath.Join(dir, "whole")
	runTrainCLI(t, writeTrainJob(t, dir, trainJob{mode: "full", base: base, train: trainPath, output: whole, nodes: 2, micro: 2, accum: 1, steps: steps, checkpoint: 5}))

	// The same run, interrupted with SIGINT once it has passed a few checkpoints.
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "full", base: base, train: trainPath, output: out, nodes: 2, micro: 2, accum: 1, steps: steps, checkpoint: 5})
	cmd := exec.Command(ringtuneBin, "train", "--config", job)
	cmd.Env = append(os.Environ(), "RINGTUNE_LOG_LEVEL=warn")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	deadline := time.Now().Add(60 * time.Second)
	for {
		steps, _ := listCheckpointSteps(out)
		if len(steps) >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.Error(t, err, "train exited with status 0 after SIGINT")
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("train did not exit within 30 s of SIGINT; stderr:\n%s", stderr.String())
	}
	assert.Contains(t, stderr.String(), "--resume")
	assert.Empty(t, findNodePIDs(t, filepath.Join(out, "job.yaml")), "node processes outlived train")

	// Resuming from the output folder finishes the run with the weights of
	// the uninterrupted one.
	last, err := listCheckpointSteps(out)
	require.NoError(t, err)
	require.NotEmpty(t, last)
	require.Less(t, last[len(last)-1], steps, "the run finished before the interrupt")
	// Rank 0 checkpointed the last completed step on its way out, unless the
	// interrupt cut an evaluation short. Then the newest checkpoint is a
	// periodic one (every 5 steps), and the resume repeats the steps after it.
	logged := readMetrics(t, out)
	newest, lastLogged := last[len(last)-1], logged[len(logged)-1].Step
	assert.LessOrEqual(t, newest, lastLogged)
	if newest%5 != 0 {
		assert.Equal(t, lastLogged, newest, "a checkpoint outside the period must be of the last logged step")
	}
	runTrainCLI(t, job, "--resume", out)
	assertTensorsClose(t, readTensors(t, filepath.Join(whole, "model")), readTensors(t, filepath.Join(out, "model")), 0)
	lines := readMetrics(t, out)
	require.Len(t, lines, steps, "metrics.jsonl must hold each step once")
	for i, line := range lines {
		assert.Equal(t, i+1, line.Step)
	}
}

func TestTrainRejectsOutputOfEarlierRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "lora", base: base, train: writeTrainData(t, dir, 40), output: out, nodes: 1, micro: 2, accum: 1, steps: 2})
	runTrainCLI(t, job)

	// A new run into the same output would mix its checkpoints with the old ones.
	_, stderr, err := runCLI(t, "train", "--config", job)
	require.Error(t, err)
	assert.Contains(t, stderr, "already contains checkpoints of an earlier run")
	assert.Contains(t, stderr, "--resume "+out)
}

func TestTrainRejectsInvalidDevice(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "lora", base: newTrainBase(t), train: writeTrainData(t, dir, 40), output: out, nodes: 1, micro: 2, accum: 1, steps: 2})

	_, stderr, err := runCLI(t, "train", "--config", job, "--device", "gpu")
	requireExitCode(t, err, 1)
	assert.Contains(t, stderr, `invalid --device "gpu": use cpu, cuda or cuda:N`)
	_, statErr := os.Stat(out)
	assert.True(t, os.IsNotExist(statErr), "train wrote into the output folder before it checked --device")
}

func TestTrainPassesDeviceToNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "lora", base: newTrainBase(t), train: writeTrainData(t, dir, 40), output: out, nodes: 1, micro: 2, accum: 1, steps: 2})

	// The nodes log the device at info level, which runCLI's level hides.
	cmd := exec.Command(ringtuneBin, "--log-level", "info", "train", "--config", job, "--device", "cpu")
	cmd.Env = os.Environ()
	output, err := cmd.CombinedOutput()
	require.NoError(t, err, string(output))
	log, err := os.ReadFile(filepath.Join(out, "logs", "node-0.log"))
	require.NoError(t, err)
	assert.Contains(t, string(log), "device=cpu")
}

func TestTrainCUDAErrorNamesDevice(t *testing.T) {
	if device.CUDABuilt && testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "lora", base: newTrainBase(t), train: writeTrainData(t, dir, 40), output: out, nodes: 1, micro: 2, accum: 1, steps: 2})

	_, stderr, err := runCLI(t, "train", "--config", job, "--device", "cuda")
	if err == nil {
		t.Skip("this host has CUDA device 0")
	}
	requireExitCode(t, err, 1)
	if device.CUDABuilt {
		// The node of rank 0 fails, and "cuda" puts rank 0 on GPU 0.
		assert.Contains(t, stderr, "--device cuda:0: ")
	} else {
		assert.Contains(t, stderr, "--device cuda: this ringtune binary was built with -tags nocuda")
	}
}

// listCheckpointSteps returns the steps of the complete checkpoints of an output folder.
func listCheckpointSteps(output string) ([]int, error) {
	entries, err := os.ReadDir(filepath.Join(output, "checkpoints"))
	if err != nil {
		return nil, err
	}
	var steps []int
	for _, e := range entries {
		var step int
		if _, err := fmt.Sscanf(e.Name(), "step-%d", &step); err == nil && !strings.HasPrefix(e.Name(), ".") {
			steps = append(steps, step)
		}
	}
	return steps, nil
}

// freeAddr returns a loopback address with a port that was free a moment ago.
// Another process may take the port before the test binds it, so it serves
// only addresses that no test binds.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	return addr
}

// logAddr waits until a process's stderr has a log line with message msg
// and returns the line's addr field. Processes listen on port 0 and log
// the address they got, which no other process can take meanwhile.
func logAddr(t *testing.T, stderr *syncWriter, msg string) string {
	t.Helper()
	var addr string
	pollUntil(t, 60*time.Second, 10*time.Millisecond, func() bool {
		for line := range strings.Lines(stderr.String()) {
			if !strings.Contains(line, `msg="`+msg+`"`) {
				continue
			}
			for field := range strings.FieldsSeq(line) {
				if value, ok := strings.CutPrefix(field, "addr="); ok {
					addr = value
					return true
				}
			}
		}
		return false
	}, func() string { return fmt.Sprintf("no %q line with an address within 60 s; stderr:\n%s", msg, stderr) })
	return addr
}

func TestKilledNodeFailsJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	trainPath := writeTrainData(t, dir, 80)
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "full", base: base, train: trainPath, output: out, nodes: 3, micro: 1, accum: 1, steps: 100000})

	env := append(os.Environ(), "RINGTUNE_LOG_LEVEL=info", "RINGTUNE_JOB_TOKEN=killed-node-test", "GOMAXPROCS=1")
	type proc struct {
		name   string
		cmd    *exec.Cmd
		stderr *syncWriter
		done   chan error
	}
	start := func(name string, args ...string) *proc {
		p := &proc{name: name, cmd: exec.Command(ringtuneBin, args...), stderr: &syncWriter{}, done: make(chan error, 1)}
		p.cmd.Env = env
		p.cmd.Stderr = p.stderr
		require.NoError(t, p.cmd.Start())
		go func() { p.done <- p.cmd.Wait() }()
		t.Cleanup(func() { _ = p.cmd.Process.Kill() })
		return p
	}
	coord := start("coordinator", "coordinator", "--config", job, "--listen", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0")
	coordAddr := logAddr(t, coord.stderr, "coordinator listening")
	coordMetrics := logAddr(t, coord.stderr, "serving metrics")
	var nodes []*proc
	for rank := range 3 {
		args := []string{"node", "--config", job, "--coordinator", coordAddr, "--rank", fmt.Sprint(rank), "--gossip-addr", "127.0.0.1:0"}
		if rank == 0 {
			args = append(args, "--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0")
		}
		nodes = append(nodes, start(fmt.Sprintf("rank %d", rank), args...))
	}
	nodeMetrics := logAddr(t, nodes[0].stderr, "serving metrics")
	nodeHealth := logAddr(t, nodes[0].stderr, "serving gRPC health")

	// Wait until the job runs, then kill rank 1.
	waitMetricsLines(t, out, 3, 60*time.Second, func() string {
		text := "coordinator stderr:\n" + coord.stderr.String()
		for _, p := range nodes {
			text += "\n" + p.name + " stderr:\n" + p.stderr.String()
		}
		return text
	})

	// While the job runs, the coordinator and the nodes serve metrics and health.
	assert.Contains(t, httpGet(t, "http://"+coordMetrics+"/metrics"), "ringtune_coordinator_")
	assert.Contains(t, httpGet(t, "http://"+nodeMetrics+"/metrics"), `ringtune_node_steps_total{rank="0"}`)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, healthStatus(t, nodeHealth))
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, healthStatus(t, coordAddr))

	require.NoError(t, nodes[1].cmd.Process.Kill())
	killed := time.Now()

	for _, p := range []*proc{coord, nodes[0], nodes[2]} {
		select {
		case err := <-p.done:
			require.Error(t, err, "%s exited with status 0 after rank 1 was killed", p.name)
			assert.Contains(t, p.stderr.String(), "rank 1", "%s does not name the lost rank; stderr:\n%s", p.name, p.stderr)
		case <-time.After(20*time.Second - time.Since(killed)):
			t.Fatalf("%s still runs 20 s after rank 1 was killed; stderr:\n%s", p.name, p.stderr)
		}
	}
	t.Logf("every process exited within %v", time.Since(killed).Round(time.Millisecond))
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}

// healthStatus returns the overall status that the gRPC health service at addr reports.
func healthStatus(t *testing.T, addr string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	return resp.Status
}

// syncWriter serializes writes, so that a test can read a buffer that a
// child process's output is copied into.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// findNodePID returns the pid of the node process of rank whose command line
// names configPath.
func findNodePID(t *testing.T, configPath string, rank int) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if len(args) < 2 || args[1] != "node" || !bytes.Contains(raw, []byte(configPath)) {
			continue
		}
		for i := range args[:len(args)-1] {
			if args[i] == "--rank" && args[i+1] == fmt.Sprint(rank) {
				return pid
			}
		}
	}
	return 0
}

// findNodePIDs returns the pids of the node processes started for configPath.
func findNodePIDs(t *testing.T, configPath string) []int {
	t.Helper()
	var pids []int
	for rank := range 8 {
		if pid := findNodePID(t, configPath, rank); pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestCoordinatorSIGTERMStopsNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "full", base: base, train: writeTrainData(t, dir, 80), output: out, nodes: 2, micro: 1, accum: 1, steps: 100000, checkpoint: 100000})
	env := append(os.Environ(), "RINGTUNE_JOB_TOKEN=sigterm-test", "GOMAXPROCS=1")

	var procs []*exec.Cmd
	var done []chan error
	start := func(logLevel string, args ...string) *syncWriter {
		cmd := exec.Command(ringtuneBin, args...)
		cmd.Env = append(env, "RINGTUNE_LOG_LEVEL="+logLevel)
		stderr := &syncWriter{}
		cmd.Stderr = stderr
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		ch := make(chan error, 1)
		go func() { ch <- cmd.Wait() }()
		procs, done = append(procs, cmd), append(done, ch)
		return stderr
	}
	// No periodic evaluation: a signal during one leaves no checkpoint of its step.
	coordStderr := start("info", "coordinator", "--config", job, "--eval-every-steps", "0", "--listen", "127.0.0.1:0", "--gossip-addr", "", "--metrics-addr", "")
	coordAddr := logAddr(t, coordStderr, "coordinator listening")
	for rank := range 2 {
		start("warn", "node", "--config", job, "--eval-every-steps", "0", "--coordinator", coordAddr, "--rank", fmt.Sprint(rank))
	}

	waitMetricsLines(t, out, 3, 60*time.Second, func() string { return "" })
	require.NoError(t, procs[0].Process.Signal(syscall.SIGTERM))

	// Every process exits with an error, because the job did not finish.
	for i, ch := range done {
		select {
		case err := <-ch:
			assert.Error(t, err, "process %d exited with status 0", i)
		case <-time.After(20 * time.Second):
			t.Fatalf("process %d still runs 20 s after the coordinator got SIGTERM", i)
		}
	}

	// Rank 0 checkpointed the last step it completed, which resume continues from.
	steps, err := listCheckpointSteps(out)
	require.NoError(t, err)
	require.NotEmpty(t, steps, "no checkpoint after SIGTERM")
	lines := readMetrics(t, out)
	assert.Equal(t, lines[len(lines)-1].Step, steps[len(steps)-1])
}

func TestTrainSurvivesKilledNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	trainPath := writeTrainData(t, dir, 80)
	const steps = 120
	spec := trainJob{mode: "full", base: base, train: trainPath, nodes: 3, micro: 1, accum: 1, steps: steps, checkpoint: 50}

	// An undisturbed run for reference.
	whole := spec
	whole.output = filepath.Join(dir, "whole")
	runTrainCLI(t, writeTrainJob(t, dir, whole))
	want := readTensors(t, filepath.Join(whole.output, "model"))

	for _, tc := range []struct {
		name   string
		rank   int
		signal syscall.Signal
	}{
		{"rank 2 killed", 2, syscall.SIGKILL},
		{"rank 0 killed", 0, syscall.SIGKILL},
		// A hung process: gossip declares it dead, and train kills it.
		{"rank 1 hung", 1, syscall.SIGSTOP},
	} {
		killedRank := tc.rank
		t.Run(tc.name, func(t *testing.T) {
			run := spec
			run.output = filepath.Join(dir, fmt.Sprintf("killed-%d-%d", killedRank, tc.signal))
			job := writeTrainJob(t, dir, run)
			stderr, done := startTrain(t, []string{"RINGTUNE_LOG_LEVEL=warn"}, "--config", job, "--set", "cluster.max_restarts=1")

			// Kill the rank once the job has run a few steps.
			waitMetricsLines(t, run.output, 5, 60*time.Second, func() string { return "stderr:\n" + stderr.String() })
			signalRank(t, run.output, killedRank, tc.signal)

			awaitTrainSuccess(t, done, stderr, killedRank)
			assert.Contains(t, stderr.String(), "starting a replacement")

			// The replacement took a survivor's state, so the result equals
			// the undisturbed run's.
			assertTensorsClose(t, want, readTensors(t, filepath.Join(run.output, "model")), 0)
			lines := readMetrics(t, run.output)
			require.NotEmpty(t, lines)
			assert.Equal(t, steps, lines[len(lines)-1].Step)
			for i := 1; i < len(lines); i++ {
				assert.Greater(t, lines[i].Step, lines[i-1].Step, "metrics.jsonl steps must increase")
			}
			coordLog, err := os.ReadFile(filepath.Join(run.output, "logs", "coordinator.log"))
			require.NoError(t, err)
			assert.Contains(t, string(coordLog), "re-forming the ring")
			logRecoveryTimes(t, string(coordLog))
		})
	}
}

func TestTrainResumeAfterLastStepWritesModel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, trainJob{mode: "full", base: newTrainBase(t), train: writeTrainData(t, dir, 40), output: out, nodes: 2, micro: 2, accum: 1, steps: 6, checkpoint: 3})
	runTrainCLI(t, job)
	want := readTensors(t, filepath.Join(out, "model"))
	wantSummary := readSummary(t, out)

	// As if rank 0 was lost after the last step, before it wrote the result.
	require.NoError(t, os.RemoveAll(filepath.Join(out, "model")))
	require.NoError(t, os.Remove(filepath.Join(out, "summary.json")))
	stdout := runTrainCLI(t, job, "--resume", out)

	assert.Contains(t, stdout, "no step after step 6")
	assertTensorsClose(t, want, readTensors(t, filepath.Join(out, "model")), 0)
	summary := readSummary(t, out)
	require.NotNil(t, summary.Loss, "the loss of the last step comes from the checkpoint")
	assert.Equal(t, *wantSummary.Loss, *summary.Loss)
	require.NotNil(t, summary.EvalLoss, "the final evaluation runs again")
	assert.Equal(t, *wantSummary.EvalLoss, *summary.EvalLoss)
	assert.Len(t, readMetrics(t, out), 6, "the resumed run adds no steps")
}

// waitMetricsLines waits until metrics.jsonl in output has n lines, and fails
// the test after timeout with the text that logs returns, such as a process's
// stderr.
func waitMetricsLines(t *testing.T, output string, n int, timeout time.Duration, logs func() string) {
	t.Helper()
	pollUntil(t, timeout, 10*time.Millisecond, func() bool {
		lines, err := os.ReadFile(filepath.Join(output, node.MetricsFile))
		return err == nil && bytes.Count(lines, []byte("\n")) >= n
	}, func() string { return fmt.Sprintf("the job did not reach step %d within %v; %s", n, timeout, logs()) })
}

// pollUntil calls done every interval until it returns true, and fails the
// test with failure's text after timeout.
func pollUntil(t *testing.T, timeout, interval time.Duration, done func() bool, failure func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !done() {
		if time.Now().After(deadline) {
			require.FailNow(t, failure())
		}
		time.Sleep(interval)
	}
}

// signalRank sends sig to the node process of rank in the job of `ringtune
// train` that writes output.
func signalRank(t *testing.T, output string, rank int, sig syscall.Signal) {
	t.Helper()
	pid := findNodePID(t, filepath.Join(output, "job.yaml"), rank)
	require.NotZero(t, pid, "no process of rank %d", rank)
	require.NoError(t, syscall.Kill(pid, sig))
}

// awaitTrainSuccess waits up to 120 s for `ringtune train` to exit with
// status 0 after rank was signalled.
func awaitTrainSuccess(t *testing.T, done <-chan error, stderr *syncWriter, rank int) {
	t.Helper()
	select {
	case err := <-done:
		require.NoError(t, err, "train failed after rank %d was signalled; stderr:\n%s", rank, stderr)
	case <-time.After(120 * time.Second):
		t.Fatalf("train did not finish within 120 s of the signal to rank %d; stderr:\n%s", rank, stderr)
	}
}

// logRecoveryTimes logs the re-formation times in a coordinator log.
func logRecoveryTimes(t *testing.T, coordLog string) {
	for line := range strings.Lines(coordLog) {
		if strings.Contains(line, "recovered from the lost rank") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

func TestTrainSurvivesLossAfterLastStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes; skipped with -short")
	}
	dir := t.TempDir()
	base := newTrainBase(t)
	trainPath := writeTrainData(t, dir, 40)
	// A large eval split makes the final evaluation last long enough for the
	// kill to land in it, after the last step and before the result.
	evalDir := filepath.Join(dir, "eval")
	require.NoError(t, os.MkdirAll(evalDir, 0o755))
	evalPath := writeTrainData(t, evalDir, 6000)
	const steps = 4
	spec := trainJob{mode: "full", base: base, train: trainPath, nodes: 2, micro: 2, accum: 1, steps: steps, checkpoint: 2}
	sets := []string{"--set", "data.eval_fraction=0", "--set", "data.eval=" + evalPath, "--set", "eval.every_steps=0"}

	whole := spec
	whole.output = filepath.Join(dir, "whole")
	runTrainCLI(t, writeTrainJob(t, dir, whole), sets...)
	want := readTensors(t, filepath.Join(whole.output, "model"))
	wantSummary := readSummary(t, whole.output)

	for _, killedRank := range []int{0, 1} {
		t.Run(fmt.Sprintf("rank %d killed", killedRank), func(t *testing.T) {
			run := spec
			run.output = filepath.Join(dir, fmt.Sprintf("killed-%d", killedRank))
			job := writeTrainJob(t, dir, run)
			stderr, done := startTrain(t, nil, append([]string{"--config", job, "--set", "cluster.max_restarts=1"}, sets...)...)

			// Kill the rank once the coordinator saw the last step.
			coordLog := filepath.Join(run.output, "logs", "coordinator.log")
			pollUntil(t, 120*time.Second, 2*time.Millisecond, func() bool {
				raw, _ := os.ReadFile(coordLog)
				return bytes.Contains(raw, []byte("last step completed"))
			}, func() string { return "the job did not reach its last step; stderr:\n" + stderr.String() })
			signalRank(t, run.output, killedRank, syscall.SIGKILL)

			awaitTrainSuccess(t, done, stderr, killedRank)
			raw, err := os.ReadFile(coordLog)
			require.NoError(t, err)
			require.Contains(t, string(raw), "before rank 0 reported the result written",
				"the kill must land after the last step and before the result")
			logRecoveryTimes(t, string(raw))

			// The replacement took a survivor's state and ran the final
			// evaluation again.
			assertTensorsClose(t, want, readTensors(t, filepath.Join(run.output, "model")), 0)
			got := readSummary(t, run.output)
			require.NotNil(t, got.EvalLoss)
			assert.Equal(t, *wantSummary.EvalLoss, *got.EvalLoss)
			require.NotNil(t, got.Loss)
			assert.Equal(t, *wantSummary.Loss, *got.Loss)
			assert.Equal(t, steps, got.Steps)

			// The kill took the last step's line with it, so the re-formed ring
			// wrote it again with the loss and the evaluation.
			lines := readMetrics(t, run.output)
			require.Len(t, lines, steps)
			last := lines[steps-1]
			assert.Equal(t, steps, last.Step)
			assert.True(t, last.Recovered)
			require.NotNil(t, last.EvalLoss)
			assert.Equal(t, *wantSummary.EvalLoss, *last.EvalLoss)
			require.NotNil(t, last.Loss)
			assert.Equal(t, *wantSummary.Loss, *last.Loss)
			assert.Equal(t, filepath.Join(run.output, "checkpoints", fmt.Sprintf("step-%08d", steps)), last.Checkpoint)
			assert.DirExists(t, last.Checkpoint)
		})
	}
}

// startTrain starts `ringtune train` with args and the extra environment
// variables env. It returns the process's stderr and a channel that receives
// its exit; the test's cleanup kills a process that still runs.
func startTrain(t *testing.T, env []string, args ...string) (*syncWriter, <-chan error) {
	t.Helper()
	cmd := exec.Command(ringtuneBin, append([]string{"train"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr := &syncWriter{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return stderr, done
}

func TestFirstJobErrorAfterDone(t *testing.T) {
	failed := errors.New("signal: killed")
	for _, tc := range []struct {
		name        string
		maxRestarts int
		rank        int
		serverErr   error
		wantErr     bool
	}{
		// Without restarts the job is done before rank 0 writes the result.
		{"rank 0 without restarts", 0, 0, nil, true},
		{"rank 0 with restarts", 1, 0, nil, false},
		{"rank 1 without restarts", 0, 1, nil, false},
		{"failed job", 1, 1, errors.New("rank 1 failed"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			launcher := &nodeLauncher{job: &jobconfig.Config{}}
			launcher.job.Cluster.MaxRestarts = tc.maxRestarts
			nodes := []*localNode{
				{rank: 0, launcher: launcher, log: filepath.Join(t.TempDir(), "node-0.log")},
				{rank: 1, launcher: launcher, log: filepath.Join(t.TempDir(), "node-1.log")},
			}
			nodeErrs := make([]error, 2)
			nodeErrs[tc.rank] = failed

			err := firstJobError(context.Background(), tc.serverErr, nodeErrs, nodes)

			if tc.wantErr {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

func TestMetricStatsSkipRecoveredLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), node.MetricsFile)
	lines := `{"step":1,"tokens_per_s":100,"bytes_sent_per_node":1000}
{"step":2,"tokens_per_s":300,"bytes_sent_per_node":3000}
{"step":3,"tokens_per_s":0,"bytes_sent_per_node":0,"recovered":true}
`
	require.NoError(t, os.WriteFile(path, []byte(lines), 0o644))
	s := trainSummary{Metrics: path}

	require.NoError(t, addMetricStats(&s))

	assert.Equal(t, 200.0, s.MedianTokensPerSec, "a recovered line has no throughput of its own")
	assert.Equal(t, 2000.0, s.BytesPerNodeStep)
}
