package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/ringtune/ringtune/membership"
	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

func TestServerJobLifecycle(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 4), nil)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}

	joinAll(t, nodes, []int{1, 0})

	assert.Equal(t, int32(1), nodes[0].resp.GetRank())
	assert.Equal(t, int32(0), nodes[1].resp.GetRank())
	for _, node := range nodes {
		assert.Equal(t, int32(2), node.resp.GetWorldSize())
		assert.Equal(t, uint64(1), node.resp.GetGeneration())
		assert.Equal(t, []string{"b:7000", "a:7000"}, node.resp.GetRing())
		assert.Equal(t, int32(4), node.resp.GetTotalSteps())
		assert.Equal(t, uint64(42), node.resp.GetShard().GetSeed())
		assert.Equal(t, int32(2), node.resp.GetShard().GetWorldSize())
	}

	for step := 1; step <= 4; step++ {
		decisions := reportAll(t, nodes, step)
		for _, decision := range decisions {
			assert.Equal(t, int32(step), decision.GetStep())
			assert.Equal(t, uint64(1), decision.GetGeneration())
			assert.Equal(t, step%2 == 0, decision.GetCheckpoint(), "checkpoint at step %d", step)
			assert.Equal(t, step == 4, decision.GetStop(), "stop at step %d", step)
			assert.InDelta(t, float64(step), decision.GetSummary().GetMeanLoss(), 1e-12)
			assert.Equal(t, int64(200), decision.GetSummary().GetTokens())
			assert.Equal(t, int64(2000), decision.GetSummary().GetBytesSent())
		}
	}

	for _, node := range nodes {
		event := node.nextEvent(t)
		assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_DONE, event.GetKind())
		assert.Equal(t, int32(4), event.GetStep())
		node.finish(t)
	}
	require.NoError(t, ts.wait(t))
	ts.summaryMu.Lock()
	defer ts.summaryMu.Unlock()
	require.Len(t, ts.summaries, 4)
	assert.Equal(t, 4, ts.summaries[3].Step)
}

func TestServerRepeatedReportGetsSameDecision(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 4), nil)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{-1, -1})
	first := reportAll(t, nodes, 1)

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	again, err := nodes[0].client.Report(ctx, reportRequest(nodes[0], 1, 1))

	require.NoError(t, err)
	assert.Equal(t, first[0].GetStep(), again.GetStep())
	assert.Equal(t, first[0].GetSummary().GetMeanLoss(), again.GetSummary().GetMeanLoss())
}

func TestServerRejectsFingerprint(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 4), nil)
	node := newFakeNode(t, ts.Addr(), "a")
	req := joinRequest("a", -1)
	req.Fingerprint.DatasetHash = "data-2"

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := node.client.Join(ctx, req)

	require.Error(t, err)
	assert.ErrorIs(t, err, ErrJoinRejected)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err))
	assert.Contains(t, err.Error(), "dataset hash differs: node has data-2, job has data-1")
}

func TestServerRejectsWrongToken(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 4), nil)
	client, err := Dial(ts.Addr(), "other-token")
	require.NoError(t, err)
	defer client.Close()
	bare, err := grpc.NewClient(ts.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer bare.Close()

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, wrongErr := client.Join(ctx, joinRequest("a", -1))
	_, missingErr := pb.NewCoordinatorClient(bare).Join(ctx, joinRequest("a", -1))

	assert.Equal(t, codes.Unauthenticated, status.Code(wrongErr))
	assert.Contains(t, wrongErr.Error(), "invalid job token")
	assert.Equal(t, codes.Unauthenticated, status.Code(missingErr))
	assert.Contains(t, missingErr.Error(), "missing job token")
}

func TestServerJoinDeadline(t *testing.T) {
	job := serverJobConfig(2, 4)
	job.JoinTimeout = 300 * time.Millisecond
	ts := startServer(t, job, nil)
	node := newFakeNode(t, ts.Addr(), "a")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := node.client.Join(ctx, joinRequest("a", -1))
	runErr := ts.wait(t)

	const wantReason = "join deadline passed: 1 of 2 nodes joined within 300ms"
	require.Error(t, err)
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err))
	assert.ErrorIs(t, err, ErrJobFailed)
	assert.Contains(t, err.Error(), wantReason)
	var jobErr *JobError
	require.ErrorAs(t, runErr, &jobErr)
	assert.Equal(t, -1, jobErr.Rank)
	assert.Equal(t, wantReason, jobErr.Reason)
}

func TestServerWatchBreakFailsJob(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 10), nil)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{0, 1})
	reportAll(t, nodes, 1)
	// Node a waits for step 2, which node b never reports.
	pending := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_, err := nodes[0].client.Report(ctx, reportRequest(nodes[0], 2, 2))
		pending <- err
	}()

	start := time.Now()
	nodes[1].cancel()

	event := nodes[0].nextEvent(t)
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_FAILED, event.GetKind())
	assert.Equal(t, int32(1), event.GetRank())
	assert.Contains(t, event.GetReason(), `rank 1 (node "b" at b:7000) was declared dead during step 2 of 10`)
	assert.Contains(t, event.GetReason(), "Watch stream broke")
	select {
	case err := <-pending:
		assert.Equal(t, codes.Aborted, status.Code(err))
		assert.ErrorIs(t, err, ErrJobFailed)
	case <-time.After(waitTimeout):
		t.Fatal("pending report was not answered")
	}

	nodes[0].finish(t)
	var jobErr *JobError
	require.ErrorAs(t, ts.wait(t), &jobErr)
	assert.Equal(t, 1, jobErr.Rank)
}

func TestServerLeaveWithErrorFailsJob(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 10), nil)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{0, 1})

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, nodes[1].client.Leave(ctx, "b", errors.New("CUDA out of memory"), false))

	event := nodes[0].nextEvent(t)
	assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_FAILED, event.GetKind())
	assert.Equal(t, int32(1), event.GetRank())
	assert.Contains(t, event.GetReason(), "failed during step 1 of 10: node error: CUDA out of memory")
	for _, node := range nodes {
		node.finish(t)
	}
	var jobErr *JobError
	require.ErrorAs(t, ts.wait(t), &jobErr)
	assert.Equal(t, 1, jobErr.Rank)
}

func TestServerGossipDeathFailsJob(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 10), func(cfg *ServerConfig) { cfg.GossipAddr = "127.0.0.1:0" })
	nodes, members := joinWithGossip(t, ts)
	assert.Equal(t, ts.GossipAddr(), nodes[0].resp.GetGossipAddress())

	require.NoError(t, members["b"].Shutdown())

	var jobErr *JobError
	require.ErrorAs(t, ts.wait(t), &jobErr)
	assert.Equal(t, int(nodes[1].resp.GetRank()), jobErr.Rank)
	assert.Contains(t, jobErr.Reason, `(node "b" at b:7000) was declared dead`)
}

func TestServerGossipDeathAfterDoneReportsRank(t *testing.T) {
	lost := make(chan string, 2)
	ts := startServer(t, serverJobConfig(2, 1), func(cfg *ServerConfig) {
		cfg.GossipAddr = "127.0.0.1:0"
		cfg.OnRankLost = func(_ int, nodeID string) { lost <- nodeID }
	})
	nodes, members := joinWithGossip(t, ts)
	for _, node := range nodes {
		node.watch(t)
	}
	reportAll(t, nodes, 1)
	require.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_DONE, nodes[1].nextEvent(t).GetKind())

	// Node b hangs with its Watch stream open, and gossip declares it dead:
	// its launcher hears of it and may end the process.
	require.NoError(t, members["b"].Shutdown())

	select {
	case id := <-lost:
		assert.Equal(t, "b", id)
	case <-time.After(waitTimeout):
		t.Fatal("no lost rank reported for the node that died after the job ended")
	}
	for _, node := range nodes {
		node.finish(t)
	}
	require.NoError(t, ts.wait(t))
}

// joinWithGossip joins nodes "a" (rank 0) and "b" (rank 1), each with a gossip
// member on 127.0.0.1, and waits until the coordinator's member joined theirs.
func joinWithGossip(t *testing.T, ts *testServer) ([]*fakeNode, map[string]*membership.Membership) {
	t.Helper()
	require.NotEmpty(t, ts.GossipAddr())
	members := make(map[string]*membership.Membership)
	for _, id := range []string{"a", "b"} {
		member, err := membership.New(membership.Config{
			Name:          id,
			BindAddr:      "127.0.0.1:0",
			Token:         testToken,
			Logger:        testLogger(t),
			ProbeInterval: 200 * time.Millisecond,
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = member.Shutdown() })
		members[id] = member
	}
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joined := make(chan error, len(nodes))
	for rank, node := range nodes {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			req := joinRequest(node.id, rank)
			req.GossipAddress = members[node.id].Addr()
			var err error
			node.resp, err = node.client.Join(ctx, req)
			joined <- err
		}()
	}
	for range nodes {
		require.NoError(t, <-joined)
	}
	// The coordinator joins the nodes' members in the background.
	require.Eventually(t, func() bool { return len(members["a"].Members()) == 3 }, waitTimeout, 20*time.Millisecond)
	return nodes, members
}

func TestServerRequestStop(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 10), nil)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{-1, -1})
	first := reportAll(t, nodes, 1)

	ts.RequestStop("operator pressed Ctrl-C")
	second := reportAll(t, nodes, 2)

	assert.False(t, first[0].GetStop())
	assert.False(t, first[0].GetCheckpoint())
	for _, decision := range second {
		assert.True(t, decision.GetStop())
		assert.True(t, decision.GetCheckpoint())
	}
	for _, node := range nodes {
		event := node.nextEvent(t)
		assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_DONE, event.GetKind())
		assert.Equal(t, "stopped: operator pressed Ctrl-C", event.GetReason())
		node.finish(t)
	}
	var jobErr *JobError
	require.ErrorAs(t, ts.wait(t), &jobErr)
	assert.Equal(t, -1, jobErr.Rank)
	assert.Equal(t, "stopped: operator pressed Ctrl-C", jobErr.Reason)
}

func TestServerRequestStopDuringRendezvous(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 10), nil)
	node := newFakeNode(t, ts.Addr(), "a")
	joined := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_, err := node.client.Join(ctx, joinRequest("a", -1))
		joined <- err
	}()
	require.Eventually(t, func() bool { return hasWaitingNode(t, ts) }, waitTimeout, 20*time.Millisecond)

	ts.RequestStop("shutdown")

	select {
	case err := <-joined:
		assert.Equal(t, codes.Aborted, status.Code(err))
		assert.Contains(t, err.Error(), "stopped: shutdown")
	case <-time.After(waitTimeout):
		t.Fatal("Join was not answered")
	}
	var jobErr *JobError
	require.ErrorAs(t, ts.wait(t), &jobErr)
	assert.Equal(t, "stopped: shutdown", jobErr.Reason)
}

// hasWaitingNode reports whether one node waits in rendezvous. It reads the state
// on the driver goroutine.
func hasWaitingNode(t *testing.T, ts *testServer) bool {
	t.Helper()
	count := make(chan int, 1)
	if !ts.post(context.Background(), func() { count <- len(ts.d.nodes) }) {
		return false
	}
	return <-count == 1
}

func TestServerMetrics(t *testing.T) {
	metricsListener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ts := startServer(t, serverJobConfig(2, 10), func(cfg *ServerConfig) { cfg.MetricsListener = metricsListener })
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{-1, -1})
	reportAll(t, nodes, 1)

	client := &http.Client{Timeout: waitTimeout}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + metricsListener.Addr().String() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text := string(body)

	assert.Equal(t, http.StatusOK, resp.StatusCode)
	for _, want := range []string{
		"ringtune_coordinator_nodes_joined 2",
		"ringtune_coordinator_generation 1",
		"ringtune_coordinator_last_completed_step 1",
		"ringtune_coordinator_step_loss 1",
		"ringtune_coordinator_tokens_per_second 181.8181",
		"ringtune_coordinator_step_bytes_sent 2000",
		"ringtune_coordinator_step_peak_memory_bytes 1.048576e+06",
		`ringtune_coordinator_phase{phase="running"} 1`,
		"ringtune_coordinator_step_compute_seconds_count 1",
		"ringtune_coordinator_failures_total 0",
	} {
		assert.Contains(t, text, want)
	}
}

func TestServerHealth(t *testing.T) {
	job := serverJobConfig(1, 1)
	ts := startServer(t, job, nil)
	// Health checks carry no token, like those of a Kubernetes probe.
	conn, err := grpc.NewClient(ts.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err)
		return resp.GetStatus()
	}
	node := newFakeNode(t, ts.Addr(), "a")

	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check(""))
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, check("ringtune.v1.Coordinator"))
	joinAll(t, []*fakeNode{node}, []int{-1})
	reportAll(t, []*fakeNode{node}, 1)
	// The server keeps serving while the node's Watch stream is open.
	assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_DONE, node.nextEvent(t).GetKind())
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check(""))
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, check("ringtune.v1.Coordinator"))

	node.finish(t)
	require.NoError(t, ts.wait(t))
}

func TestServerContextCancel(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 10), nil)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{-1, -1})

	ts.cancel()

	for _, node := range nodes {
		event := node.nextEvent(t)
		assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_FAILED, event.GetKind())
		assert.Contains(t, event.GetReason(), "coordinator shut down: context canceled")
		node.finish(t)
	}
	assert.ErrorIs(t, ts.wait(t), context.Canceled)
}

func TestClientJoinRetriesUntilCoordinatorStarts(t *testing.T) {
	reserved, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := reserved.Addr().String()
	require.NoError(t, reserved.Close())
	client, err := Dial(addr, testToken)
	require.NoError(t, err)
	defer client.Close()
	joined := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_, err := client.Join(ctx, joinRequest("a", -1))
		joined <- err
	}()

	time.Sleep(300 * time.Millisecond)
	l, err := net.Listen("tcp", addr)
	require.NoError(t, err, "port %s was taken in between", addr)
	startServer(t, serverJobConfig(1, 1), func(cfg *ServerConfig) { cfg.Listener = l })

	select {
	case err := <-joined:
		assert.NoError(t, err)
	case <-time.After(waitTimeout):
		t.Fatal("Join did not return")
	}
}

func TestClientJoinGivesUpWhenContextEnds(t *testing.T) {
	reserved, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := reserved.Addr().String()
	require.NoError(t, reserved.Close())
	client, err := Dial(addr, testToken)
	require.NoError(t, err)
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = client.Join(ctx, joinRequest("a", -1))

	require.Error(t, err)
	assert.Contains(t, err.Error(), addr)
}

// TestClientWatchLostCoordinator uses a gRPC server whose Watch fails at once, which
// looks to the client like a coordinator that went away.
func TestClientWatchLostCoordinator(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	server := grpc.NewServer()
	pb.RegisterCoordinatorServer(server, pb.UnimplementedCoordinatorServer{})
	go func() { _ = server.Serve(l) }()
	defer server.Stop()
	client, err := Dial(l.Addr().String(), testToken)
	require.NoError(t, err)
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	events, err := client.Watch(ctx, "a")
	require.NoError(t, err)

	var got []*pb.JobEvent
	for event := range events {
		got = append(got, event)
	}
	require.Len(t, got, 1)
	assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_FAILED, got[0].GetKind())
	assert.Equal(t, int32(-1), got[0].GetRank())
	assert.True(t, strings.HasPrefix(got[0].GetReason(), "lost the coordinator at "+l.Addr().String()+": "), got[0].GetReason())
}

func TestServerWatchUnknownNode(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 10), nil)
	node := newFakeNode(t, ts.Addr(), "a")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	events, err := node.client.Watch(ctx, "ghost")
	require.NoError(t, err)
	event := <-events

	assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_FAILED, event.GetKind())
	assert.Contains(t, event.GetReason(), `node "ghost" has not joined`)
}

func TestNewServerRejectsInvalidConfig(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	tests := []struct {
		name    string
		cfg     ServerConfig
		wantErr string
	}{
		{"invalid job", ServerConfig{Job: Config{}, Token: "t", Listener: l}, "JobID is missing"},
		{"missing token", ServerConfig{Job: testConfig(1), Listener: l}, "Token is missing"},
		{"missing listener", ServerConfig{Job: testConfig(1), Token: "t"}, "Listener is missing"},
		{"negative tick", ServerConfig{Job: testConfig(1), Token: "t", Listener: l, TickInterval: -1}, "must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewServer(tt.cfg)

			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestServerReformsRingAfterStoppedNode(t *testing.T) {
	ts, nodes := startRestartableJob(t, 3, 1, nil)
	reportAll(t, nodes, 1)

	// Rank 0 reports step 2 and waits, and rank 1 is stopped by a signal.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pending := make(chan error, 1)
	go func() {
		_, err := nodes[0].client.Report(ctx, reportRequest(nodes[0], 2, 2))
		pending <- err
	}()
	time.Sleep(50 * time.Millisecond)
	stopNode(t, ctx, nodes[1])

	event := nodes[0].nextEvent(t)
	assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_REFORM, event.GetKind())
	assert.Equal(t, uint64(2), event.GetGeneration())
	assert.Equal(t, int32(1), event.GetRank())
	assert.Equal(t, int32(1), event.GetStep())
	err := <-pending
	assert.Equal(t, codes.Unavailable, status.Code(err), "the waiting report fails: %v", err)
	assert.Contains(t, err.Error(), "the ring re-forms under generation 2")

	// The survivor joins again with its state, and a replacement takes rank 1.
	survivor := rejoinRequest("a", 0, 1)
	replacement := newFakeNode(t, ts.Addr(), "c")
	responses := make(chan *pb.JoinResponse, 2)
	for _, join := range []struct {
		node *fakeNode
		req  *pb.JoinRequest
	}{{nodes[0], survivor}, {replacement, joinRequest("c", 1)}} {
		go func() {
			resp, err := join.node.client.Join(ctx, join.req)
			assert.NoError(t, err)
			responses <- resp
		}()
	}
	for range 2 {
		resp := <-responses
		require.NotNil(t, resp)
		assert.Equal(t, uint64(2), resp.GetGeneration())
		assert.Equal(t, int32(1), resp.GetStartStep())
		assert.Equal(t, int32(0), resp.GetSourceRank())
		assert.Equal(t, `{"step":1}`, string(resp.GetTrainerState()))
		assert.Equal(t, []string{"a:7000", "c:7000"}, resp.GetRing())
	}

	// The new generation finishes the job.
	nodes[0].resp.Generation = 2
	replacement.resp = &pb.JoinResponse{Rank: 1, Generation: 2}
	replacement.watch(t)
	survivors := []*fakeNode{nodes[0], replacement}
	reportAll(t, survivors, 2)
	decisions := reportAll(t, survivors, 3)
	assert.True(t, decisions[0].GetStop())
	finishAfterLastStep(t, survivors)
	require.NoError(t, ts.wait(t))
}

// finishAfterLastStep has rank 0, nodes[0], leave as after writing the
// result, and checks that the others then get the DONE event.
func finishAfterLastStep(t *testing.T, nodes []*fakeNode) {
	t.Helper()
	select {
	case event := <-nodes[1].events:
		t.Fatalf("node %s got %v before rank 0 wrote the result", nodes[1].id, event)
	case <-time.After(100 * time.Millisecond):
	}
	nodes[0].finish(t)
	for _, node := range nodes[1:] {
		assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_DONE, node.nextEvent(t).GetKind())
		node.finish(t)
	}
}

func TestServerReformAfterLastStepEndsJob(t *testing.T) {
	ts, nodes := startRestartableJob(t, 2, 1, nil)
	reportAll(t, nodes, 1)

	// Rank 0 finished the last step when rank 1 was lost.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	go func() { _, _ = nodes[0].client.Report(ctx, reportRequest(nodes[0], 2, 2)) }()
	time.Sleep(50 * time.Millisecond)
	stopNode(t, ctx, nodes[1])
	require.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_REFORM, nodes[0].nextEvent(t).GetKind())

	survivor := rejoinRequest("a", 0, 2)
	replacement := newFakeNode(t, ts.Addr(), "c")
	done := make(chan *pb.JoinResponse, 1)
	go func() {
		resp, err := replacement.client.Join(ctx, joinRequest("c", 1))
		assert.NoError(t, err)
		done <- resp
	}()
	resp, err := nodes[0].client.Join(ctx, survivor)
	require.NoError(t, err)
	assert.Equal(t, int32(2), resp.GetStartStep())
	assert.Equal(t, int32(2), (<-done).GetStartStep())

	// No step is left: the replacement takes the state, and the job is done
	// once rank 0 wrote the result.
	replacement.watch(t)
	finishAfterLastStep(t, []*fakeNode{nodes[0], replacement})
	require.NoError(t, ts.wait(t))
}

func TestServerFreesRankOfReplacementThatGaveUp(t *testing.T) {
	ts, nodes := startRestartableJob(t, 10, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stopNode(t, ctx, nodes[1])
	require.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_REFORM, nodes[0].nextEvent(t).GetKind())

	// A replacement joins and dies before the ring re-formed: its Join call ends.
	dying := newFakeNode(t, ts.Addr(), "c")
	dyingCtx, die := context.WithTimeout(ctx, 200*time.Millisecond)
	defer die()
	_, err := dying.client.Join(dyingCtx, joinRequest("c", 1))
	require.Error(t, err)
	// The coordinator learns of the ended call a moment after the client.
	time.Sleep(300 * time.Millisecond)

	// The survivor joins again, and the next replacement takes rank 1.
	survivor := rejoinRequest("a", 0, 0)
	rejoined := make(chan *pb.JoinResponse, 1)
	go func() {
		resp, err := nodes[0].client.Join(ctx, survivor)
		assert.NoError(t, err)
		rejoined <- resp
	}()
	resp, err := newFakeNode(t, ts.Addr(), "d").client.Join(ctx, joinRequest("d", 1))
	require.NoError(t, err, "the rank of the replacement that gave up stays taken")
	assert.Equal(t, []string{"a:7000", "d:7000"}, resp.GetRing())
	assert.Equal(t, []string{"a:7000", "d:7000"}, (<-rejoined).GetRing())
}

// stopNode makes node leave as a node stopped by a signal does, with restart
// set, and closes its Watch stream.
func stopNode(t *testing.T, ctx context.Context, node *fakeNode) {
	t.Helper()
	require.NoError(t, node.client.Leave(ctx, node.id, errors.New("stopped: terminated"), true))
	node.cancel()
}

func TestServerLosesNodeWithoutWatch(t *testing.T) {
	job := serverJobConfig(2, 10)
	job.MaxRestarts = 1
	ts := startServer(t, job, func(cfg *ServerConfig) { cfg.WatchTimeout = 300 * time.Millisecond })
	a, b := newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")

	// b joins and dies before it opens its Watch stream.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	go func() { _, _ = b.client.Join(ctx, joinRequest("b", 1)) }()
	resp, err := a.client.Join(ctx, joinRequest("a", 0))
	require.NoError(t, err)
	a.resp = resp
	a.events, err = a.client.Watch(ctx, "a")
	require.NoError(t, err)

	event := a.nextEvent(t)
	assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_REFORM, event.GetKind())
	assert.Equal(t, int32(1), event.GetRank())
	assert.Contains(t, event.GetReason(), "opened no Watch stream")
}

func TestServerKeepsWatchOfNodeThatCameBack(t *testing.T) {
	_, nodes := startRestartableJob(t, 10, 2, func(cfg *ServerConfig) { cfg.WatchTimeout = 300 * time.Millisecond })

	// b is declared lost while it still runs, and joins again with the Watch
	// stream it kept open.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, nodes[1].client.Leave(ctx, "b", errors.New("stalled"), true))
	require.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_REFORM, nodes[0].nextEvent(t).GetKind())
	require.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_REFORM, nodes[1].nextEvent(t).GetKind())
	rejoined := make(chan error, 1)
	go func() {
		_, err := nodes[1].client.Join(ctx, joinRequest("b", 1))
		rejoined <- err
	}()
	survivor := rejoinRequest("a", 0, 0)
	_, err := nodes[0].client.Join(ctx, survivor)
	require.NoError(t, err)
	require.NoError(t, <-rejoined)

	// No second loss follows for want of a new Watch stream.
	select {
	case event := <-nodes[0].events:
		t.Fatalf("unexpected event after the ring re-formed: %v", event)
	case <-time.After(time.Second):
	}
}

// startRestartableJob starts a server for a job of two nodes that allows
// maxRestarts re-formations, and joins nodes "a" (rank 0) and "b" (rank 1).
func startRestartableJob(t *testing.T, totalSteps, maxRestarts int, modify func(*ServerConfig)) (*testServer, []*fakeNode) {
	t.Helper()
	job := serverJobConfig(2, totalSteps)
	job.MaxRestarts = maxRestarts
	ts := startServer(t, job, modify)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{0, 1})
	return ts, nodes
}

// rejoinRequest returns the join request of a survivor that holds the state of
// step, with trainer state {"step":STEP}.
func rejoinRequest(id string, rank, step int) *pb.JoinRequest {
	req := joinRequest(id, rank)
	req.HasState, req.CompletedStep, req.TrainerState = true, int32(step), []byte(fmt.Sprintf(`{"step":%d}`, step))
	return req
}

func TestServerResumedAfterLastStepWaitsForWatches(t *testing.T) {
	job := serverJobConfig(2, 4)
	job.StartStep = job.TotalSteps
	ts := startServer(t, job, nil)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}

	// The joins end the job, since no step is left. Nodes open their Watch
	// streams some time after their join returned, and must still get the
	// final event rather than a stopped coordinator.
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			resp, err := node.client.Join(ctx, joinRequest(node.id, i))
			assert.NoError(t, err)
			node.resp = resp
		})
	}
	wg.Wait()
	time.Sleep(300 * time.Millisecond)
	for _, node := range nodes {
		assert.Equal(t, int32(4), node.resp.GetStartStep())
		node.watch(t)
		assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_DONE, node.nextEvent(t).GetKind())
		node.finish(t)
	}
	require.NoError(t, ts.wait(t))
}

func TestServerStopsWhenAcceptedNodeNeverWatches(t *testing.T) {
	job := serverJobConfig(1, 4)
	job.StartStep = job.TotalSteps
	ts := startServer(t, job, func(cfg *ServerConfig) { cfg.ShutdownTimeout = 200 * time.Millisecond })
	node := newFakeNode(t, ts.Addr(), "a")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := node.client.Join(ctx, joinRequest("a", 0))
	require.NoError(t, err)

	// The wait for the node's stream is bounded by the shutdown timeout.
	require.NoError(t, ts.wait(t))
}

func TestServerShutdownSkipsStreamsOfLeftNodes(t *testing.T) {
	// A shutdown timeout past the test's wait: the server must not wait for
	// the streams of nodes that left.
	ts := startServer(t, serverJobConfig(2, 1), func(cfg *ServerConfig) { cfg.ShutdownTimeout = time.Minute })
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{0, 1})
	reportAll(t, nodes, 1)

	// Both nodes leave, and b hangs with its Watch stream still open.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, nodes[1].client.Leave(ctx, "b", nil, false))
	nodes[0].finish(t)

	require.NoError(t, ts.wait(t))
}

func TestServerGossipLeaveAfterLastStepReforms(t *testing.T) {
	job := serverJobConfig(2, 1)
	job.MaxRestarts = 1
	ts := startServer(t, job, func(cfg *ServerConfig) { cfg.GossipAddr = "127.0.0.1:0" })
	nodes, members := joinWithGossip(t, ts)
	for _, node := range nodes {
		node.watch(t)
	}
	reportAll(t, nodes, 1)

	// Rank 0 leaves gossip without a Leave call, as when its write of the
	// result failed and the call did not get through: the ring re-forms
	// rather than the job ending done.
	require.NoError(t, members["a"].Leave(time.Second))

	event := nodes[1].nextEvent(t)
	assert.Equal(t, pb.JobEventKind_JOB_EVENT_KIND_REFORM, event.GetKind())
	assert.Equal(t, int32(0), event.GetRank())
}
