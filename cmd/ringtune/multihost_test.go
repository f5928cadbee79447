package main

import (
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

// multiHostJob is a job across network namespaces, one per host: a coordinator
// and world nodes that find each other by the DNS names of Kubernetes Services,
// with the flags of the manifests in deploy/k8s.
type multiHostJob struct {
	nw     *netnsNetwork
	output string
	// want holds the adapter of an undisturbed run of the same job.
	want  map[string][]float32
	env   []string
	args  []string // the job flags every process gets
	coord *hostProcess
	nodes []*hostProcess
}

const multiHostSteps = 150

// startMultiHostJob runs the undisturbed reference with ringtune train, then
// starts the coordinator and world nodes in namespaces of their own.
func startMultiHostJob(t *testing.T, world, maxRestarts int) *multiHostJob {
	t.Helper()
	if testing.Short() {
		t.Skip("starts node processes in network namespaces; skipped with -short")
	}
	if reason := netnsUnavailable(); reason != "" {
		t.Skipf("needs network namespaces, and %s: run the tests as root with iproute2 installed", reason)
	}
	nw, err := newNetnsNetwork(world+1, linkShape{})
	t.Cleanup(func() {
		assert.NoError(t, nw.Close())
		out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
		assert.NotContains(t, string(out), nw.prefix, "namespaces left behind")
	})
	require.NoError(t, err)
	netnsHosts(t, nw)

	dir := t.TempDir()
	spec := trainJob{mode: "lora", base: newTrainBase(t), train: writeTrainData(t, dir, 90), nodes: world, micro: 1, accum: 2, steps: multiHostSteps, checkpoint: 40}

	// The undisturbed run, with as many cores per node process as train gives.
	whole := spec
	whole.output = filepath.Join(dir, "whole")
	runTrainCLI(t, writeTrainJob(t, dir, whole), "--set", "lora.dropout=0.1")

	run := spec
	run.output = filepath.Join(dir, "out")
	j := &multiHostJob{
		nw:     nw,
		output: run.output,
		want:   readTensors(t, filepath.Join(whole.output, "adapter")),
		env: append(os.Environ(), "RINGTUNE_JOB_TOKEN=multi-host-test",
			fmt.Sprintf("GOMAXPROCS=%d", max(1, runtime.NumCPU()/world)), "RINGTUNE_LOG_LEVEL=info"),
		args: []string{"--config", writeTrainJob(t, dir, run), "--set", "lora.dropout=0.1",
			"--set", fmt.Sprintf("cluster.max_restarts=%d", maxRestarts)},
	}
	j.coord = startInNamespace(t, nw.names[0], "coordinator", j.env,
		append([]string{"coordinator", "--listen", ":29400", "--gossip-addr", ":7946", "--metrics-addr", ":9400"}, j.args...)...)
	for rank := range world {
		j.nodes = append(j.nodes, j.startNode(t, rank))
	}
	return j
}

// startNode starts a node of rank with the flags of the node Job in deploy/k8s,
// metrics and health included.
func (j *multiHostJob) startNode(t *testing.T, rank int) *hostProcess {
	args := append([]string{"node", "--coordinator", "ringtune-coordinator:29400", "--rank", fmt.Sprint(rank),
		"--listen", ":29500", "--advertise", fmt.Sprintf("ringtune-nodes-%d.ringtune-nodes:29500", rank),
		"--gossip-addr", ":7946", "--gossip-join", "ringtune-nodes:7946", "--metrics-addr", ":9400", "--health-addr", ":8081"}, j.args...)
	return startInNamespace(t, j.nw.names[rank+1], fmt.Sprintf("rank %d", rank), j.env, args...)
}

// waitSteps waits until metrics.jsonl has n lines.
func (j *multiHostJob) waitSteps(t *testing.T, n int) {
	t.Helper()
	waitMetricsLines(t, j.output, n, 90*time.Second, func() string { return "coordinator stderr:\n" + j.coord.stderr.String() })
}

// finish waits for every process to exit with status 0, then checks that the
// adapter equals the undisturbed run's and metrics.jsonl reaches the last step.
func (j *multiHostJob) finish(t *testing.T, procs ...*hostProcess) {
	t.Helper()
	for _, p := range append([]*hostProcess{j.coord}, procs...) {
		select {
		case err := <-p.done:
			require.NoError(t, err, "%s failed; stderr:\n%s", p.name, p.stderr)
			p.done <- err
		case <-time.After(180 * time.Second):
			t.Fatalf("%s still runs after 180 s; stderr:\n%s", p.name, p.stderr)
		}
	}
	assert.Contains(t, j.coord.stderr.String(), "re-forming the ring")
	assertTensorsClose(t, j.want, readTensors(t, filepath.Join(j.output, "adapter")), 0)
	lines := readMetrics(t, j.output)
	require.NotEmpty(t, lines)
	assert.Equal(t, multiHostSteps, lines[len(lines)-1].Step)
}

// TestMultiHostNodeRestart stops one node as Kubernetes stops a pod and starts
// its replacement, and the job must end with the weights of an undisturbed run.
func TestMultiHostNodeRestart(t *testing.T) {
	j := startMultiHostJob(t, 3, 1)
	j.waitSteps(t, 10)

	require.NoError(t, j.nodes[1].cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-j.nodes[1].done:
		require.Error(t, err, "a node stopped mid-job must exit non-zero, so that Kubernetes replaces its pod")
		j.nodes[1].done <- err
	case <-time.After(30 * time.Second):
		t.Fatalf("rank 1 did not exit within 30 s of SIGTERM; stderr:\n%s", j.nodes[1].stderr)
	}
	replacement := j.startNode(t, 1)

	j.finish(t, j.nodes[0], j.nodes[2], replacement)
	assert.Contains(t, replacement.stderr.String(), "took over the state of a survivor")
}

// TestMultiHostPartitionedNode cuts one host off the network for longer than
// gossip takes to declare it dead, then reconnects it. The cut-off node finds
// its coordinator stream broken and exits non-zero, and a replacement starts in
// its host as Kubernetes starts a new pod.
func TestMultiHostPartitionedNode(t *testing.T) {
	j := startMultiHostJob(t, 3, 2)
	j.waitSteps(t, 10)

	link := []string{"-n", j.nw.names[3], "link", "set", "eth0"}
	require.NoError(t, runIP("ip", append(link, "down")...))
	// Gossip declares a member dead after about 5 s; 15 s leaves room on a
	// loaded machine.
	time.Sleep(15 * time.Second)
	require.NoError(t, runIP("ip", append(link, "up")...))

	procs := []*hostProcess{j.nodes[0], j.nodes[1]}
	select {
	case err := <-j.nodes[2].done:
		require.Error(t, err, "a node cut off from the job must exit non-zero, so that Kubernetes replaces its pod")
		j.nodes[2].done <- err
		procs = append(procs, j.startNode(t, 2))
	case <-time.After(60 * time.Second):
		t.Fatalf("the cut-off rank 2 still runs 60 s after its link came back; stderr:\n%s", j.nodes[2].stderr)
	}
	j.finish(t, procs...)
}
