package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/model"
	"github.com/ringtune/ringtune/train"
)

// commTestConfig is a Qwen3 shape small enough that a full-mode step moves
// under half a megabyte.
const commTestConfig = `{"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-6,
 "rope_theta": 1000000, "max_position_embeddings": 128, "tie_word_embeddings": true}`

// commTestBucketMB makes buckets of at most 52428 bytes, so the 128 KiB embedding
// gradient takes the ring all-reduce and the other buckets the small one.
const commTestBucketMB = "0.05"

func writeCommTestConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(commTestConfig), 0o644))
	return dir
}

// expectedBytesSent computes the mean payload bytes per rank per step from the
// collective's algorithm, independently of the command: 2(N-1)/N · S for a
// ring all-reduce and (N-1) · S for a buffer of at most 64 KiB of fp32.
func expectedBytesSent(t *testing.T, cfg model.Config, opts model.Options, n int, wireBytes float64) (gradientBytes int64, sent float64) {
	t.Helper()
	specs, err := model.TrainableSpecs(cfg, opts)
	require.NoError(t, err)
	sizes := make([]int, len(specs))
	for i, s := range specs {
		sizes[i] = int(s.NumElements())
		gradientBytes += 4 * s.NumElements()
	}
	buckets, err := train.PlanBuckets(sizes, 52428) // int(0.05 MiB), as --bucket-mb 0.05 gives
	require.NoError(t, err)
	sawSmall, sawRing := false, false
	for _, b := range buckets {
		elems := float64(b.End - b.Start)
		if 4*(b.End-b.Start) <= 64<<10 {
			sawSmall = true
			sent += float64(n-1) * elems * wireBytes
		} else {
			sawRing = true
			sent += 2 * float64(n-1) / float64(n) * elems * wireBytes
		}
	}
	if opts.Mode == model.ModeFull {
		require.True(t, sawSmall && sawRing, "the full-mode test shape should use both all-reduce paths")
	}
	return gradientBytes, sent
}

func TestBenchCommJSONBytesMatchFormula(t *testing.T) {
	if testing.Short() {
		t.Skip("starts local ranks; skipped with -short")
	}
	dir := writeCommTestConfig(t)
	stdout, stderr, err := runCLI(t, "bench", "comm", "--model", dir, "--mode", "full,lora",
		"--lora-targets", "attention;all", "--nodes", "2,3", "--dtype", "fp32,bf16",
		"--steps", "2", "--warmup", "0", "--bucket-mb", commTestBucketMB, "--json")
	require.NoError(t, err, stderr)

	var out map[string][]map[string]any
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&out), stdout)
	assert.False(t, dec.More(), "stdout holds more than one JSON value")
	require.Len(t, out, 1)
	rows := out["rows"]
	require.Len(t, rows, 2*2*3) // nodes × dtypes × (full, two LoRA target sets)

	cfg, err := model.LoadConfig(dir)
	require.NoError(t, err)
	optsByMode := map[string]model.Options{
		"full":              {Mode: model.ModeFull},
		"lora-r8-attention": {Mode: model.ModeLoRA, LoRA: model.LoRAConfig{Rank: 8, Alpha: 16, TargetModules: []string{"q_proj", "k_proj", "v_proj", "o_proj"}}},
		"lora-r8-all":       {Mode: model.ModeLoRA, LoRA: model.LoRAConfig{Rank: 8, Alpha: 16, TargetModules: model.ProjectionModules()}},
	}
	wantKeys := []string{"mode", "nodes", "dtype", "gradient_bytes", "bytes_sent_per_node_per_step", "allreduce_s_per_step", "busbw_GBps"}
	for i, row := range rows {
		var keys []string
		for k := range row {
			keys = append(keys, k)
		}
		assert.ElementsMatch(t, wantKeys, keys, "row %d", i)

		mode, _ := row["mode"].(string)
		opts, ok := optsByMode[mode]
		require.True(t, ok, "row %d has an unexpected mode %q", i, mode)
		nodes, err := row["nodes"].(json.Number).Int64()
		require.NoError(t, err)
		wire := 4.0
		if row["dtype"] == "bf16" {
			wire = 2
		}
		wantGradient, wantSent := expectedBytesSent(t, cfg, opts, int(nodes), wire)
		gradient, err := row["gradient_bytes"].(json.Number).Int64()
		require.NoError(t, err)
		sent, _ := row["bytes_sent_per_node_per_step"].(json.Number).Float64()
		timeS, _ := row["allreduce_s_per_step"].(json.Number).Float64()
		busbw, _ := row["busbw_GBps"].(json.Number).Float64()
		assert.Equal(t, wantGradient, gradient, "row %d (%s, N=%d)", i, mode, nodes)
		assert.InDelta(t, wantSent, sent, 1e-6*wantSent, "row %d (%s, N=%d, %s)", i, mode, nodes, row["dtype"])
		assert.Greater(t, timeS, 0.0, "row %d", i)
		n := float64(nodes)
		assert.InDelta(t, float64(gradient)/timeS/1e9*2*(n-1)/n, busbw, 1e-9*busbw, "row %d", i)
	}
}

func TestBenchCommTableRatiosAndChart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts local ranks; skipped with -short")
	}
	dir := writeCommTestConfig(t)
	chartPath := filepath.Join(t.TempDir(), "comm.png")
	stdout, stderr, err := runCLI(t, "bench", "comm", "--model", dir, "--mode", "full,lora",
		"--lora-rank", "4,8", "--nodes", "2", "--steps", "2", "--bucket-mb", commTestBucketMB,
		"--chart", chartPath, "--compute-s", "0.5", "--project-gbps", "25")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "busbw(GB/s)")
	assert.Contains(t, stdout, "ratio full : lora-r4-attention (N=2, fp32): bytes sent")
	assert.Contains(t, stdout, "ratio full : lora-r8-attention (N=2, fp32): bytes sent")
	assert.Contains(t, stdout, "all-reduce time")
	assert.Contains(t, stdout, "# projection:")
	assert.Contains(t, stdout, "25Gb/s step(s)")
	assert.Contains(t, stdout, "scaling")

	data, err := os.ReadFile(chartPath)
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(data))
	require.NoError(t, err, "the chart is not a valid PNG")
	assert.Greater(t, img.Bounds().Dx(), 100)
}

func TestBenchCommBadFlags(t *testing.T) {
	missingDir := filepath.Join(t.TempDir(), "missing")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "half"}, `unknown training mode "half"`},
		{[]string{"--lora-targets", "q_proj,wrong"}, `"wrong" is not a projection`},
		{[]string{"--lora-targets", "attention;"}, "empty --lora-targets set"},
		{[]string{"--nodes", "1"}, "at least 2 ranks"},
		{[]string{"--dtype", "fp8"}, `unknown wire dtype "fp8"`},
		{[]string{"--steps", "0"}, "--steps is 0"},
		{[]string{"--bucket-mb", "0"}, "--bucket-mb is 0"},
		{[]string{"--project-gbps", "fast"}, `invalid --project-gbps entry "fast"`},
		{[]string{"--link-latency", "1ms"}, "--link-latency needs --link-gbps"},
		{[]string{"--chart", "out.svg"}, "must name a .png file"},
		{[]string{"--model", "/nonexistent"}, "--model"},
		{[]string{"--bucket-mb", "1e13"}, "--bucket-mb is 1e+13"},
		{[]string{"--link-gbps", "Inf"}, "--link-gbps is +Inf"},
		{[]string{"--link-gbps", "NaN"}, "--link-gbps is NaN"},
		{[]string{"--project-gbps", "inf"}, "--project-gbps has +Inf"},
		{[]string{"--compute-s", "NaN"}, "--compute-s is NaN"},
		{[]string{"--chart", filepath.Join(missingDir, "x.png")}, "does not exist"},
	}
	for _, tc := range cases {
		_, stderr, err := runCLI(t, append([]string{"bench", "comm", "--model", "tiny"}, tc.args...)...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}

// netnsTestReady skips the test unless network namespaces can be made here.
func netnsTestReady(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts local ranks in network namespaces; skipped with -short")
	}
	if reason := netnsUnavailable(); reason != "" {
		t.Skipf("network namespaces are unavailable: %s", reason)
	}
}

// namespacesWithPrefix returns the network namespaces whose names start with prefix.
func namespacesWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	require.NoError(t, err, string(out))
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if name, _, _ := strings.Cut(line, " "); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	return names
}

// startCommLauncher starts bench comm on shaped links and returns the
// process and the prefix of its namespaces.
func startCommLauncher(t *testing.T, dir string, steps int, stdout, stderr io.Writer) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(ringtuneBin, "bench", "comm", "--model", dir, "--mode", "full,lora",
		"--nodes", "2", "--steps", strconv.Itoa(steps), "--bucket-mb", commTestBucketMB,
		"--link-gbps", "1", "--link-latency", "1ms", "--json")
	cmd.Env = append(os.Environ(), "RINGTUNE_LOG_LEVEL=error")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	require.NoError(t, cmd.Start())
	return cmd, "rtc-" + strconv.Itoa(cmd.Process.Pid) + "-"
}

func TestBenchCommNetnsRemovesNamespaces(t *testing.T) {
	netnsTestReady(t)
	dir := writeCommTestConfig(t)

	var stdout, stderr bytes.Buffer
	cmd, prefix := startCommLauncher(t, dir, 2, &stdout, &stderr)
	require.NoError(t, cmd.Wait(), stderr.String())
	var out map[string][]map[string]any
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &out), stdout.String())
	assert.Len(t, out["rows"], 2)
	assert.Empty(t, namespacesWithPrefix(t, prefix), "namespaces left behind after a run")
}

func TestBenchCommNetnsCleansUpAfterFailure(t *testing.T) {
	netnsTestReady(t)
	dir := writeCommTestConfig(t)
	cases := []struct {
		name string
		kill func(t *testing.T, launcher *exec.Cmd, workerPid int)
	}{
		{"worker killed", func(t *testing.T, _ *exec.Cmd, workerPid int) {
			require.NoError(t, syscall.Kill(workerPid, syscall.SIGKILL))
		}},
		{"launcher interrupted", func(t *testing.T, launcher *exec.Cmd, _ int) {
			require.NoError(t, launcher.Process.Signal(os.Interrupt))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The process writes stderr while the test reads it.
			var stdout, stderr syncWriter
			// Enough steps that the ring is still running when the test strikes.
			cmd, prefix := startCommLauncher(t, dir, 100000, &stdout, &stderr)
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				for _, name := range namespacesWithPrefix(t, prefix) {
					_ = exec.Command("ip", "netns", "del", name).Run()
				}
			})

			// Wait for rank 1 to run inside its namespace. The ip and tc commands
			// that set the namespace up run there briefly too, so only a process
			// whose command line names the worker counts.
			workerPid := 0
			deadline := time.Now().Add(10 * time.Second)
			for workerPid == 0 && time.Now().Before(deadline) {
				out, _ := exec.Command("ip", "netns", "pids", prefix+"1").Output()
				for _, field := range strings.Fields(string(out)) {
					pid, err := strconv.Atoi(field)
					if err != nil {
						continue
					}
					if cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil && strings.Contains(string(cmdline), "comm-worker") {
						workerPid = pid
						break
					}
				}
				if workerPid == 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
			require.NotZero(t, workerPid, "rank 1 never ran in namespace %s1: %s", prefix, stderr.String())
			time.Sleep(200 * time.Millisecond) // let the ring form and start its steps
			c.kill(t, cmd, workerPid)

			select {
			case err := <-exited:
				assert.Error(t, err, "the launcher succeeded although it was interrupted")
			case <-time.After(15 * time.Second):
				t.Fatalf("the launcher did not exit: %s", stderr.String())
			}
			assert.Empty(t, namespacesWithPrefix(t, prefix), "namespaces left behind: %s", stderr.String())
		})
	}
}
