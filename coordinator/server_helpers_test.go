package coordinator

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

const (
	testToken = "job-token"
	// waitTimeout bounds every network wait in the server tests.
	waitTimeout = 10 * time.Second
)

// testServer is a Server running in the background.
type testServer struct {
	*Server
	cancel context.CancelFunc
	result chan error

	summaryMu sync.Mutex
	summaries []StepSummary
}

// startServer runs a server on 127.0.0.1 for cfg with the test token. modify may
// change the server config before the server is created.
func startServer(t *testing.T, job Config, modify func(*ServerConfig)) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ts := &testServer{result: make(chan error, 1)}
	cfg := ServerConfig{
		Job:             job,
		Token:           testToken,
		Listener:        l,
		TickInterval:    20 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		Logger:          testLogger(t),
		OnSummary: func(summary StepSummary) {
			ts.summaryMu.Lock()
			defer ts.summaryMu.Unlock()
			ts.summaries = append(ts.summaries, summary)
		},
	}
	if modify != nil {
		modify(&cfg)
	}
	server, err := NewServer(cfg)
	require.NoError(t, err)
	ts.Server = server

	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.result <- server.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.result:
		case <-time.After(waitTimeout):
			t.Error("Run did not return after its context was canceled")
		}
	})
	return ts
}

// wait returns Run's result.
func (ts *testServer) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ts.result:
		ts.result <- err
		return err
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return in time")
		return nil
	}
}

// serverJobConfig returns a job of worldSize nodes, totalSteps steps, a checkpoint
// every 2 steps and a join timeout of a minute.
func serverJobConfig(worldSize, totalSteps int) Config {
	cfg := testConfig(worldSize)
	cfg.TotalSteps = totalSteps
	cfg.CheckpointInterval = 2
	return cfg
}

// fakeNode is a node made of a Client, without training.
type fakeNode struct {
	id     string
	client *Client
	resp   *pb.JoinResponse
	events <-chan *pb.JobEvent
	cancel context.CancelFunc
}

func newFakeNode(t *testing.T, addr, id string) *fakeNode {
	t.Helper()
	client, err := Dial(addr, testToken)
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	return &fakeNode{id: id, client: client}
}

func joinRequest(id string, requestedRank int) *pb.JoinRequest {
	return &pb.JoinRequest{
		NodeId:        id,
		Address:       id + ":7000",
		JobId:         "job-1",
		RequestedRank: int32(requestedRank),
		Fingerprint: &pb.Fingerprint{
			BinaryVersion: testFingerprint.BinaryVersion,
			ConfigHash:    testFingerprint.ConfigHash,
			ModelHash:     testFingerprint.ModelHash,
			DatasetHash:   testFingerprint.DatasetHash,
		},
	}
}

// joinAll joins the nodes concurrently, node i requesting ranks[i], and opens their
// Watch streams.
func joinAll(t *testing.T, nodes []*fakeNode, ranks []int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, node := range nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			node.resp, errs[i] = node.client.Join(ctx, joinRequest(node.id, ranks[i]))
		})
	}
	wg.Wait()
	for i, node := range nodes {
		require.NoError(t, errs[i], "join of node %s", node.id)
		node.watch(t)
	}
}

// watch opens the node's Watch stream until the test ends.
func (n *fakeNode) watch(t *testing.T) {
	t.Helper()
	watchCtx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err := n.client.Watch(watchCtx, n.id)
	require.NoError(t, err, "Watch of node %s", n.id)
	n.events, n.cancel = events, cancel
}

func reportRequest(node *fakeNode, step int, loss float64) *pb.StepReport {
	return &pb.StepReport{
		NodeId:             node.id,
		Rank:               node.resp.GetRank(),
		Generation:         node.resp.GetGeneration(),
		Step:               int32(step),
		Loss:               loss,
		Tokens:             100,
		BytesSent:          1000,
		ComputeNs:          int64(time.Second),
		AllreduceNs:        int64(300 * time.Millisecond),
		ExposedAllreduceNs: int64(100 * time.Millisecond),
		PeakMemoryBytes:    1 << 20,
	}
}

// reportAll sends every node's report of step concurrently and returns the
// decisions, indexed like nodes.
func reportAll(t *testing.T, nodes []*fakeNode, step int) []*pb.StepDecision {
	t.Helper()
	var wg sync.WaitGroup
	decisions := make([]*pb.StepDecision, len(nodes))
	errs := make([]error, len(nodes))
	for i, node := range nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			decisions[i], errs[i] = node.client.Report(ctx, reportRequest(node, step, float64(step)))
		})
	}
	wg.Wait()
	for i, node := range nodes {
		require.NoError(t, errs[i], "report of node %s for step %d", node.id, step)
	}
	return decisions
}

// nextEvent returns the next event of the node's Watch stream.
func (n *fakeNode) nextEvent(t *testing.T) *pb.JobEvent {
	t.Helper()
	select {
	case event, ok := <-n.events:
		require.True(t, ok, "Watch channel of node %s closed without an event", n.id)
		return event
	case <-time.After(waitTimeout):
		t.Fatalf("no Watch event for node %s in time", n.id)
		return nil
	}
}

// finish leaves the job and closes the client, as a node does after the final event.
func (n *fakeNode) finish(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// The coordinator may already have stopped, so a failed Leave is fine here.
	_ = n.client.Leave(ctx, n.id, nil, false)
	require.NoError(t, n.client.Close())
}

// testLogger writes to the test's output, which go test shows for failed tests and
// with -v. Goroutines may still log after the test's checks, so the writer drops
// lines once the test's cleanup has run.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{out: t.Output()}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu      sync.Mutex
	out     io.Writer
	stopped bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return len(p), nil
	}
	return w.out.Write(p)
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
}
