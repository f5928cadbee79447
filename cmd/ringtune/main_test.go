package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ringtuneBin is the binary under test, built once by TestMain.
var ringtuneBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ringtune-cli-test")
	if err != nil {
		panic(err)
	}
	ringtuneBin = filepath.Join(dir, "ringtune")
	build := exec.Command("go", "build", "-o", ringtuneBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		panic("build ringtune: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runCLI runs the binary and returns stdout, stderr and the exit error.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(ringtuneBin, args...)
	cmd.Env = append(os.Environ(), "RINGTUNE_LOG_LEVEL=warn")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func TestBenchAllReduceJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("starts local ranks; skipped with -short")
	}
	stdout, stderr, err := runCLI(t, "bench", "allreduce", "--nodes", "2,3", "--sizes", "4KiB,1MiB",
		"--iters", "3", "--warmup", "1", "--json")
	require.NoError(t, err, stderr)

	// stdout holds exactly one JSON object with the documented keys.
	var out map[string][]map[string]any
	dec := json.NewDecoder(bytes.NewReader([]byte(stdout)))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&out), stdout)
	assert.False(t, dec.More(), "stdout holds more than one JSON value")
	require.Len(t, out, 1)
	rows := out["rows"]
	require.Len(t, rows, 4)
	wantKeys := []string{"algbw_GBps", "busbw_GBps", "bytes", "dtype", "nodes", "time_s"}
	for i, row := range rows {
		var keys []string
		for k := range row {
			keys = append(keys, k)
		}
		assert.ElementsMatch(t, wantKeys, keys, "row %d", i)
		nodes, _ := row["nodes"].(json.Number).Float64()
		algbw, _ := row["algbw_GBps"].(json.Number).Float64()
		busbw, _ := row["busbw_GBps"].(json.Number).Float64()
		timeS, _ := row["time_s"].(json.Number).Float64()
		size, _ := row["bytes"].(json.Number).Float64()
		assert.Greater(t, timeS, 0.0, "row %d", i)
		assert.InDelta(t, size/timeS/1e9, algbw, 1e-9*algbw+1e-12, "row %d", i)
		assert.InDelta(t, algbw*2*(nodes-1)/nodes, busbw, 1e-9*busbw+1e-12, "row %d", i)
		assert.Equal(t, "fp32", row["dtype"], "row %d", i)
	}
	assert.Equal(t, json.Number("4096"), rows[0]["bytes"])
	assert.Equal(t, json.Number("1048576"), rows[1]["bytes"])
	assert.Equal(t, json.Number("3"), rows[3]["nodes"])
}

func TestBenchAllReduceTable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts local ranks; skipped with -short")
	}
	stdout, stderr, err := runCLI(t, "bench", "allreduce", "--nodes", "2", "--sizes", "64KiB",
		"--iters", "3", "--dtype", "bf16")
	require.NoError(t, err, stderr)
	assert.Contains(t, stdout, "averaged over ranks")
	assert.Contains(t, stdout, "busbw(GB/s)")
	assert.Contains(t, stdout, "64KiB")
	assert.Contains(t, stdout, "bf16")
}

func TestBenchAllReduceBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--sizes", "4KB"}, `invalid size "4KB"`},
		{[]string{"--sizes", "6"}, "not a multiple of 4 bytes"},
		{[]string{"--nodes", "0"}, "invalid --nodes entry"},
		{[]string{"--dtype", "fp8"}, `unknown wire dtype "fp8"`},
		{[]string{"--peers", "127.0.0.1:1,127.0.0.1:2", "--rank", "5"}, "--rank 5 is not in [0, 2)"},
		{[]string{"--peers", ""}, "--peers is empty"},
		{[]string{"--peers", "127.0.0.1:1,"}, `--peers entry 1 ("") is not host:port`},
		{[]string{"--peers", "127.0.0.1:1,127.0.0.1:1"}, "each rank needs its own address"},
		{[]string{"--peers", "127.0.0.1:1,127.0.0.1:2", "--nodes", "2"}, "--nodes and --peers exclude each other"},
		{[]string{"--chunk-bytes", "1"}, "--chunk-bytes 1"},
		{[]string{"--warmup", "-2"}, "--warmup is -2"},
		{[]string{"--timeout", "0s"}, "--timeout is 0s"},
		{[]string{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.pem"}, "--tls-cert"},
		{[]string{"--sizes", "1024GiB", "--nodes", "2"}, "GiB is available"},
	}
	for _, tc := range cases {
		_, stderr, err := runCLI(t, append([]string{"bench", "allreduce"}, tc.args...)...)
		require.Error(t, err, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}

func TestLogLevelReachesWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts local ranks; skipped with -short")
	}
	cmd := exec.Command(ringtuneBin, "--log-level", "error", "bench", "allreduce", "--sizes", "4KiB", "--iters", "2")
	cmd.Env = os.Environ()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), stderr.String())
	assert.NotContains(t, stderr.String(), "level=WARN", "workers logged below the chosen level")
}

func TestParseSize(t *testing.T) {
	cases := map[string]int64{"4096": 4096, "4KiB": 4096, "4K": 4096, "64MiB": 64 << 20, "1GiB": 1 << 30, "16m": 16 << 20, "12B": 12}
	for in, want := range cases {
		got, err := parseSize(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "-4", "4KB", "x", "2TiB"} {
		_, err := parseSize(bad)
		assert.Error(t, err, bad)
	}
}
