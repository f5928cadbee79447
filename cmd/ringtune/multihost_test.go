package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/node"
)

// netnsHosts writes /etc/netns/NAME/hosts for every namespace of nw, which
// 'ip netns exec' mounts over /etc/hosts: the names that a Kubernetes
// coordinator Service and a headless Service over the nodes would publish. The
// first namespace is the coordinator's, the others are ranks 0, 1, ...
func netnsHosts(t *testing.T, nw *netnsNetwork) {
	t.Helper()
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1 localhost\n")
	fmt.Fprintf(&hosts, "%s ringtune-coordinator\n", nw.addrs[0])
	for rank, addr := range nw.addrs[1:] {
		fmt.Fprintf(&hosts, "%s ringtune-nodes-%d.ringtune-nodes\n", addr, rank)
		fmt.Fprintf(&hosts, "%s ringtune-nodes\n", addr)
	}
	for _, name := range nw.names {
		dir := filepath.Join("/etc/netns", name)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		t.Cleanup(func() { os.RemoveAll(dir) })
		require.NoError(t, os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts.String()), 0o644))
	}
}

// hostProcess is one ringtune process in a network namespace of its own.
type hostProcess struct {
	name   string
	cmd    *exec.Cmd
	stderr *syncWriter
	done   chan error
}

func startInNamespace(t *testing.T, ns, name string, env []string, args ...string) *hostProcess {
	t.Helper()
	p := &hostProcess{name: name, stderr: &syncWriter{}, done: make(chan error, 1)}
	// ip netns exec replaces itself with the command, so the pid is ringtune's.
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, ringtuneBin}, args...)...)
	p.cmd.Env = env
	p.cmd.Stderr = p.stderr
	require.NoError(t, p.cmd.Start())
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// TestMultiHostNodeRestart runs a job across network namespaces, one per host.
// The hosts find each other by the DNS names of Kubernetes Services. The test
// stops one node as Kubernetes stops a pod and starts its replacement, and the
// job must end with the weights of an undisturbed run.
func TestMultiHostNodeRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes in network namespaces; skipped with -short")
	}
	if why := netnsUnavailable(); why != "" {
		t.Skipf("needs network namespaces, and %s: run the tests as root with iproute2 installed", why)
	}
	const world, steps = 3, 150
	nw, err := newNetnsNetwork(world+1, linkShape{})
	t.Cleanup(func() {
		assert.NoError(t, nw.Close())
		out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
		assert.NotContains(t, string(out), nw.prefix, "namespaces left behind")
	})
	require.NoError(t, err)
	netnsHosts(t, nw)

	dir := t.TempDir()
	base := newTrainBase(t)
	trainPath := writeTrainData(t, dir, 90)
	spec := trainJob{mode: "lora", base: base, train: trainPath, nodes: world, micro: 1, accum: 2, steps: steps, checkpoint: 40}

	// The undisturbed run, with as many cores per node process as train gives.
	whole := spec
	whole.output = filepath.Join(dir, "whole")
	runTrainCLI(t, writeTrainJob(t, dir, whole), "--set", "lora.dropout=0.1")
	want := readTensors(t, filepath.Join(whole.output, "adapter"))

	run := spec
	run.output = filepath.Join(dir, "out")
	job := writeTrainJob(t, dir, run)
	procs := max(1, runtime.NumCPU()/world)
	env := append(os.Environ(), "RINGTUNE_JOB_TOKEN=multi-host-test", fmt.Sprintf("GOMAXPROCS=%d", procs), "RINGTUNE_LOG_LEVEL=info")
	common := []string{"--config", job, "--set", "lora.dropout=0.1", "--set", "cluster.max_restarts=1"}
	coord := startInNamespace(t, nw.names[0], "coordinator", env,
		append([]string{"coordinator", "--listen", ":29400", "--gossip-addr", ":7946", "--metrics-addr", ":9400"}, common...)...)
	// The flags follow the node Job of deploy/k8s, metrics and health included.
	startNode := func(rank int) *hostProcess {
		args := append([]string{"node", "--coordinator", "ringtune-coordinator:29400", "--rank", fmt.Sprint(rank),
			"--listen", ":29500", "--advertise", fmt.Sprintf("ringtune-nodes-%d.ringtune-nodes:29500", rank),
			"--gossip-addr", ":7946", "--gossip-join", "ringtune-nodes:7946", "--metrics-addr", ":9400", "--health-addr", ":8081"}, common...)
		return startInNamespace(t, nw.names[rank+1], fmt.Sprintf("rank %d", rank), env, args...)
	}
	nodes := make([]*hostProcess, world)
	for rank := range world {
		nodes[rank] = startNode(rank)
	}

	// Once the job has run a few steps, stop rank 1 as Kubernetes stops a pod,
	// and start its replacement in the same host.
	deadline := time.Now().Add(90 * time.Second)
	for {
		if lines, err := os.ReadFile(filepath.Join(run.output, node.MetricsFile)); err == nil && bytes.Count(lines, []byte("\n")) >= 10 {
			break
		}
		require.False(t, time.Now().After(deadline), "the job did not reach step 10 within 90 s; coordinator stderr:\n%s", coord.stderr)
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, nodes[1].cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-nodes[1].done:
		require.Error(t, err, "a node stopped mid-job must exit non-zero, so that Kubernetes replaces its pod")
		nodes[1].done <- err
	case <-time.After(30 * time.Second):
		t.Fatalf("rank 1 did not exit within 30 s of SIGTERM; stderr:\n%s", nodes[1].stderr)
	}
	replacement := startNode(1)

	for _, p := range []*hostProcess{coord, nodes[0], nodes[2], replacement} {
		select {
		case err := <-p.done:
			require.NoError(t, err, "%s failed; stderr:\n%s", p.name, p.stderr)
			p.done <- err
		case <-time.After(180 * time.Second):
			t.Fatalf("%s still runs 180 s after the restart; stderr:\n%s", p.name, p.stderr)
		}
	}
	assert.Contains(t, coord.stderr.String(), "re-forming the ring")
	assert.Contains(t, replacement.stderr.String(), "took over the state of a survivor")

	assertTensorsClose(t, want, readTensors(t, filepath.Join(run.output, "adapter")), 0)
	lines := readMetrics(t, run.output)
	require.NotEmpty(t, lines)
	assert.Equal(t, steps, lines[len(lines)-1].Step)
}
