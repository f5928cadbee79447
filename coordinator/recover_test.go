package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// restartConfig returns testConfig(worldSize) that allows the ring to re-form
// restarts times.
func restartConfig(worldSize, restarts int) Config {
	cfg := testConfig(worldSize)
	cfg.MaxRestarts = restarts
	return cfg
}

// finishingJob starts a job of cfg and has every rank complete every step.
func finishingJob(t *testing.T, cfg Config) *Coordinator {
	t.Helper()
	c := startJob(t, cfg)
	completeSteps(t, c, 1, 1, cfg.TotalSteps)
	return c
}

// rejoinOf returns the join of a survivor that holds the state of step.
func rejoinOf(id string, step int) Join {
	join := joinOf(id, -1)
	join.State = NodeState{HasState: true, CompletedStep: step, TrainerState: fmt.Sprintf(`{"step":%d}`, step)}
	return join
}

// reportGen returns reportOf with the given generation.
func reportGen(rank, step int, generation uint64) StepReport {
	report := reportOf(rank, step, 1)
	report.Generation = generation
	return report
}

// completeSteps has every rank of generation report steps from through to.
func completeSteps(t *testing.T, c *Coordinator, generation uint64, from, to int) {
	t.Helper()
	for step := from; step <= to; step++ {
		for rank := range c.cfg.WorldSize {
			mustStep(t, c, reportGen(rank, step, generation))
		}
	}
}

func TestLostRankStartsRecovery(t *testing.T) {
	c := startJob(t, restartConfig(3, 2))
	completeSteps(t, c, 1, 1, 3)

	actions := mustStep(t, c, Dead{NodeID: "n1"})

	reform := onlyAction[Reform](t, actions)
	assert.Equal(t, uint64(2), reform.Generation)
	assert.Equal(t, 1, reform.LostRank)
	assert.Equal(t, "n1", reform.LostNodeID)
	assert.Equal(t, 3, reform.Step)
	assert.Contains(t, reform.Reason, "rank 1")
	assert.Equal(t, PhaseRecovering, c.Phase())
	assert.Equal(t, uint64(2), c.Generation())
}

func TestRecoveryReformsRing(t *testing.T) {
	c := startJob(t, restartConfig(3, 1))
	completeSteps(t, c, 1, 1, 3)
	// Rank 2 finished step 4 before rank 1 died; rank 0 did not.
	mustStep(t, c, reportGen(2, 4, 1))
	mustStep(t, c, Dead{NodeID: "n1"})

	assert.Empty(t, mustStep(t, c, rejoinOf("n0", 3)))
	assert.Empty(t, mustStep(t, c, rejoinOf("n2", 4)))
	actions := mustStep(t, c, joinOf("new", -1))

	require.Len(t, actions, 3)
	for rank, action := range actions {
		accepted := action.(JoinAccepted)
		assert.Equal(t, rank, accepted.Rank)
		assert.Equal(t, uint64(2), accepted.Generation)
		assert.Equal(t, 4, accepted.StartStep, "the state of the survivor that completed the most steps")
		assert.Equal(t, 2, accepted.SourceRank)
		assert.Equal(t, `{"step":4}`, accepted.TrainerState)
	}
	assert.Equal(t, "new", actions[1].(JoinAccepted).NodeID, "the newcomer takes the free rank")
	assert.Equal(t, []string{"n0:7000", "new:7000", "n2:7000"}, actions[0].(JoinAccepted).Ring)
	assert.Equal(t, PhaseRunning, c.Phase())
	assert.Equal(t, 4, c.LastCompletedStep())

	// Reports of the old generation are dropped, and the new one goes on at step 5.
	_, err := c.Step(reportGen(0, 5, 1))
	require.ErrorIs(t, err, ErrStaleGeneration)
	completeSteps(t, c, 2, 5, 5)
	assert.Equal(t, 5, c.LastCompletedStep())
}

func TestRecoveryNewcomerRequestsFreeRank(t *testing.T) {
	c := startJob(t, restartConfig(2, 1))
	mustStep(t, c, Dead{NodeID: "n0"})
	mustStep(t, c, rejoinOf("n1", 0))

	taken := joinOf("x", 1)
	actions := mustStep(t, c, taken)
	require.Len(t, actions, 1)
	assert.Contains(t, actions[0].(JoinRejected).Reason, "requested rank 1 is already taken")

	actions = mustStep(t, c, joinOf("y", 0))
	require.Len(t, actions, 2)
	assert.Equal(t, "y", actions[0].(JoinAccepted).NodeID)
	assert.Equal(t, 0, actions[0].(JoinAccepted).StartStep)
	assert.Equal(t, 1, actions[0].(JoinAccepted).SourceRank)
}

func TestRecoveryRejectsImpossibleState(t *testing.T) {
	c := startJob(t, restartConfig(2, 1))
	completeSteps(t, c, 1, 1, 3)
	mustStep(t, c, Dead{NodeID: "n1"})

	for _, step := range []int{2, 5} {
		actions := mustStep(t, c, rejoinOf("n0", step))
		require.Len(t, actions, 1)
		assert.Contains(t, actions[0].(JoinRejected).Reason, "every rank completed step 3")
	}
}

func TestRecoveryWithoutStateFails(t *testing.T) {
	c := startJob(t, restartConfig(2, 1))
	mustStep(t, c, Dead{NodeID: "n1"})
	mustStep(t, c, joinOf("n0", -1)) // a survivor that lost its state
	actions := mustStep(t, c, joinOf("new", -1))

	failed := onlyAction[FailJob](t, actions)
	assert.Contains(t, failed.Reason, "no node that joined again holds the training state")
	assert.Equal(t, PhaseFailed, c.Phase())
}

func TestRecoveryDeadline(t *testing.T) {
	c := startJob(t, restartConfig(2, 1))
	mustStep(t, c, Dead{NodeID: "n1"})
	mustStep(t, c, rejoinOf("n0", 0))

	assert.Empty(t, mustStep(t, c, Tick{Now: testStart.Add(time.Hour)}))
	assert.Empty(t, mustStep(t, c, Tick{Now: testStart.Add(time.Hour + time.Minute - time.Second)}))
	actions := mustStep(t, c, Tick{Now: testStart.Add(time.Hour + time.Minute)})

	failed := onlyAction[FailJob](t, actions)
	assert.Contains(t, failed.Reason, "rank 1")
	assert.Contains(t, failed.Reason, "1 of 2 nodes joined generation 2 within 1m0s")
}

func TestRestartLimit(t *testing.T) {
	tests := []struct {
		name       string
		restarts   int
		wantReason string
	}{
		{"no restarts", 0, "was declared dead during step 1 of 10"},
		{"limit reached", 1, "re-formed as often as max_restarts (1) allows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startJob(t, restartConfig(2, tt.restarts))
			if tt.restarts > 0 {
				mustStep(t, c, Dead{NodeID: "n1"})
				mustStep(t, c, rejoinOf("n0", 0), joinOf("n1b", -1))
				require.Equal(t, PhaseRunning, c.Phase())
			}

			actions := mustStep(t, c, Dead{NodeID: "n0"})

			failed := onlyAction[FailJob](t, actions)
			assert.Contains(t, failed.Reason, tt.wantReason)
			assert.Equal(t, PhaseFailed, c.Phase())
		})
	}
}

func TestLeaveWithoutRestartFails(t *testing.T) {
	c := startJob(t, restartConfig(2, 3))

	actions := mustStep(t, c, Leave{NodeID: "n1"})
	require.Len(t, actions, 1)
	assert.IsType(t, FailJob{}, actions[0])

	c = startJob(t, restartConfig(2, 3))
	actions = mustStep(t, c, Leave{NodeID: "n1", Restart: true})
	require.Len(t, actions, 1)
	assert.IsType(t, Reform{}, actions[0])
}

func TestSecondLossDuringRecovery(t *testing.T) {
	c := startJob(t, restartConfig(3, 1))
	completeSteps(t, c, 1, 1, 2)
	mustStep(t, c, Dead{NodeID: "n1"})
	mustStep(t, c, rejoinOf("n0", 2))

	assert.Empty(t, mustStep(t, c, Dead{NodeID: "n2"}), "a loss during recovery joins the same generation")
	assert.Equal(t, uint64(2), c.Generation())
	assert.Empty(t, mustStep(t, c, joinOf("a", -1)))
	actions := mustStep(t, c, joinOf("b", -1))

	require.Len(t, actions, 3)
	assert.Equal(t, "a", actions[1].(JoinAccepted).NodeID)
	assert.Equal(t, "b", actions[2].(JoinAccepted).NodeID)
	assert.Equal(t, 0, actions[2].(JoinAccepted).SourceRank)
}

func TestRecoveryAfterLastStep(t *testing.T) {
	cfg := restartConfig(2, 1)
	cfg.TotalSteps = 3
	c := startJob(t, cfg)
	completeSteps(t, c, 1, 1, 2)
	mustStep(t, c, reportGen(0, 3, 1))
	mustStep(t, c, Dead{NodeID: "n1"})

	actions := mustStep(t, c, rejoinOf("n0", 3), joinOf("new", -1))

	require.Len(t, actions, 3)
	assert.Equal(t, Finish{Generation: 2, Step: 3}, actions[2])
	assert.Equal(t, PhaseFinishing, c.Phase())
	assert.Equal(t, []Action{Done{Generation: 2, Step: 3}}, mustStep(t, c, Leave{NodeID: "n0"}),
		"rank 0 wrote the result")
	assert.Equal(t, PhaseDone, c.Phase())
}

func TestLastStepWaitsForRankZero(t *testing.T) {
	cfg := restartConfig(3, 1)
	cfg.TotalSteps = 2
	c := startJob(t, cfg)
	completeSteps(t, c, 1, 1, 1)
	for rank := range 2 {
		mustStep(t, c, reportGen(rank, 2, 1))
	}

	actions := mustStep(t, c, reportGen(2, 2, 1))

	require.Len(t, actions, 3)
	assert.IsType(t, StepSummary{}, actions[0])
	assert.IsType(t, Checkpoint{}, actions[1])
	assert.Equal(t, Finish{Generation: 1, Step: 2}, actions[2])
	assert.Equal(t, PhaseFinishing, c.Phase())
	assert.Empty(t, mustStep(t, c, Leave{NodeID: "n2"}), "rank 2 has nothing left to do")
	assert.Equal(t, PhaseFinishing, c.Phase())
	assert.Equal(t, []Action{Done{Generation: 1, Step: 2}}, mustStep(t, c, Leave{NodeID: "n0"}))
	assert.Equal(t, PhaseDone, c.Phase())
}

func TestLastStepWithoutRestartsIsDone(t *testing.T) {
	cfg := testConfig(2)
	cfg.TotalSteps = 1
	c := startJob(t, cfg)
	mustStep(t, c, reportGen(0, 1, 1))

	actions := mustStep(t, c, reportGen(1, 1, 1))

	require.NotEmpty(t, actions)
	assert.Equal(t, Done{Generation: 1, Step: 1}, actions[len(actions)-1])
	assert.Equal(t, PhaseDone, c.Phase())
}

func TestRankZeroLostAfterLastStepReforms(t *testing.T) {
	cfg := restartConfig(2, 1)
	cfg.TotalSteps = 2
	c := finishingJob(t, cfg)

	actions := mustStep(t, c, Dead{NodeID: "n0"})

	reform := onlyAction[Reform](t, actions)
	assert.Equal(t, 0, reform.LostRank)
	assert.Equal(t, 2, reform.Step)
	assert.Contains(t, reform.Reason, "after the last step (2), before rank 0 reported the result written")

	actions = mustStep(t, c, rejoinOf("n1", 2), joinOf("new", -1))
	require.Len(t, actions, 3)
	accepted := actionAs[JoinAccepted](t, actions[0])
	assert.Equal(t, "new", accepted.NodeID, "the replacement takes rank 0")
	assert.Equal(t, 1, accepted.SourceRank)
	assert.Equal(t, 2, accepted.StartStep)
	assert.Equal(t, Finish{Generation: 2, Step: 2}, actions[2])
}

func TestRankZeroLeavesDuringRecoveryAfterLastStep(t *testing.T) {
	cfg := restartConfig(3, 1)
	cfg.TotalSteps = 2
	c := finishingJob(t, cfg)
	mustStep(t, c, Dead{NodeID: "n2"})
	assert.Equal(t, PhaseRecovering, c.Phase())

	// Rank 0 wrote the result while the ring re-formed around rank 2.
	actions := mustStep(t, c, Leave{NodeID: "n0"})

	assert.Equal(t, []Action{Done{Generation: 2, Step: 2}}, actions)
	assert.Equal(t, PhaseDone, c.Phase())
}

func TestLossAfterLastStepPastRestartLimit(t *testing.T) {
	cfg := restartConfig(3, 1)
	cfg.TotalSteps = 1
	c := startJob(t, cfg)
	mustStep(t, c, Dead{NodeID: "n2"})
	mustStep(t, c, rejoinOf("n0", 0), rejoinOf("n1", 0), joinOf("new", -1))
	completeSteps(t, c, 2, 1, 1)
	require.Equal(t, PhaseFinishing, c.Phase())

	// Rank 0 may still need rank 1 for the final evaluation, so the job
	// fails at once rather than leave rank 0 waiting.
	actions := mustStep(t, c, Dead{NodeID: "n1"})

	failed := onlyAction[FailJob](t, actions)
	assert.Equal(t, 1, failed.Rank)
	assert.Contains(t, failed.Reason, "after the last step (1)")
	assert.Contains(t, failed.Reason, "max_restarts (1)")
	assert.Equal(t, PhaseFailed, c.Phase())
}

func TestFailedLeaveAfterLastStepFailsJob(t *testing.T) {
	cfg := restartConfig(2, 1)
	cfg.TotalSteps = 1
	c := finishingJob(t, cfg)

	actions := mustStep(t, c, Leave{NodeID: "n0", Failed: true})

	failed := onlyAction[FailJob](t, actions)
	assert.Contains(t, failed.Reason, "rank 0 (node \"n0\" at n0:7000) failed after the last step (1)")
	assert.Equal(t, PhaseFailed, c.Phase())
}

func TestRejoinRetryIsIdempotent(t *testing.T) {
	c := startJob(t, restartConfig(2, 1))
	mustStep(t, c, Dead{NodeID: "n1"})

	assert.Empty(t, mustStep(t, c, rejoinOf("n0", 0)))
	assert.Empty(t, mustStep(t, c, rejoinOf("n0", 0)), "a retried join waits for the ring")
	other := rejoinOf("n0", 0)
	other.Address = "elsewhere:1"
	actions := mustStep(t, c, other)
	require.Len(t, actions, 1)
	assert.IsType(t, JoinRejected{}, actions[0])
}

func TestLostRankZeroLeavingCleanlyEndsJob(t *testing.T) {
	cfg := restartConfig(2, 1)
	cfg.TotalSteps = 2
	c := finishingJob(t, cfg)
	mustStep(t, c, Dead{NodeID: "n0"})
	require.Equal(t, PhaseRecovering, c.Phase())

	// The lost rank 0 was alive after all and wrote the result.
	actions := mustStep(t, c, Leave{NodeID: "n0"})

	assert.Equal(t, []Action{Done{Generation: 2, Step: 2}}, actions)
	assert.Equal(t, PhaseDone, c.Phase())
}

func TestLostRankZeroFailingLeaveChangesNothing(t *testing.T) {
	cfg := restartConfig(2, 1)
	cfg.TotalSteps = 2
	c := finishingJob(t, cfg)
	mustStep(t, c, Dead{NodeID: "n0"})

	_, err := c.Step(Leave{NodeID: "n0", Failed: true})

	require.ErrorIs(t, err, ErrUnknownNode)
	assert.Equal(t, PhaseRecovering, c.Phase())
}

func TestFinishingTimesOut(t *testing.T) {
	cfg := restartConfig(2, 1)
	cfg.TotalSteps = 1
	cfg.FinishTimeout = time.Minute
	c := finishingJob(t, cfg)
	require.Equal(t, PhaseFinishing, c.Phase())

	assert.Empty(t, mustStep(t, c, Tick{Now: testStart.Add(time.Hour)}), "the first tick starts the timeout")
	assert.Empty(t, mustStep(t, c, Tick{Now: testStart.Add(time.Hour + 59*time.Second)}))
	actions := mustStep(t, c, Tick{Now: testStart.Add(time.Hour + time.Minute)})

	failed := onlyAction[FailJob](t, actions)
	assert.Equal(t, 0, failed.Rank)
	assert.Contains(t, failed.Reason, `rank 0 (node "n0") did not write the result and leave within 1m0s`)
	assert.Equal(t, PhaseFailed, c.Phase())
}
