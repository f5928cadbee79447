package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// memberlist's Shutdown does not wait for a probe in flight, whose
	// goroutine ends when the probe interval ran out.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

var (
	testStart       = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	testFingerprint = Fingerprint{
		BinaryVersion: "v1.0.0",
		ConfigHash:    "cfg-1",
		ModelHash:     "model-1",
		DatasetHash:   "data-1",
	}
)

// testConfig returns a valid config for a job of worldSize nodes and 10 steps, with
// a checkpoint every 4 steps.
func testConfig(worldSize int) Config {
	return Config{
		JobID:              "job-1",
		WorldSize:          worldSize,
		JoinTimeout:        time.Minute,
		CheckpointInterval: 4,
		TotalSteps:         10,
		Seed:               42,
		Fingerprint:        testFingerprint,
	}
}

// joinOf returns a valid join of node id with address "<id>:7000".
func joinOf(id string, requestedRank int) Join {
	return Join{
		NodeID:        id,
		Address:       id + ":7000",
		JobID:         "job-1",
		RequestedRank: requestedRank,
		Fingerprint:   testFingerprint,
	}
}

// reportOf returns a report of generation 1 with 100 tokens, 1 s of compute and
// 0.1 s of exposed all-reduce.
func reportOf(rank, step int, loss float64) StepReport {
	return StepReport{
		Rank:                 rank,
		Generation:           1,
		Step:                 step,
		Loss:                 loss,
		Tokens:               100,
		BytesSent:            1000,
		ComputeTime:          time.Second,
		AllReduceTime:        300 * time.Millisecond,
		ExposedAllReduceTime: 100 * time.Millisecond,
		PeakMemory:           1 << 20,
	}
}

func newTestCoordinator(t *testing.T, cfg Config) *Coordinator {
	t.Helper()
	c, err := New(cfg, testStart)
	require.NoError(t, err)
	return c
}

// mustStep applies events that must all be accepted and returns the actions of all.
func mustStep(t *testing.T, c *Coordinator, events ...Event) []Action {
	t.Helper()
	var actions []Action
	for _, event := range events {
		out, err := c.Step(event)
		require.NoError(t, err, "event %+v", event)
		actions = append(actions, out...)
	}
	return actions
}

// startJob joins worldSize nodes "n0", "n1", ... without requested ranks, so node
// "n<i>" gets rank i, and returns the running coordinator.
func startJob(t *testing.T, cfg Config) *Coordinator {
	t.Helper()
	c := newTestCoordinator(t, cfg)
	for i := range cfg.WorldSize {
		mustStep(t, c, joinOf(nodeName(i), -1))
	}
	require.Equal(t, PhaseRunning, c.Phase())
	return c
}

func nodeName(i int) string {
	return fmt.Sprintf("n%d", i)
}

// actionAs returns action as an A, and fails the test when it has another type.
func actionAs[A Action](t *testing.T, action Action) A {
	t.Helper()
	a, ok := action.(A)
	require.True(t, ok, "action %T, expected %T", action, a)
	return a
}

// onlyAction returns the one action in actions as an A.
func onlyAction[A Action](t *testing.T, actions []Action) A {
	t.Helper()
	require.Len(t, actions, 1)
	return actionAs[A](t, actions[0])
}
