package coordinator

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResumedJobStartsAfterStartStep(t *testing.T) {
	cfg := testConfig(2)
	cfg.StartStep = 7
	c := startJob(t, cfg)
	assert.Equal(t, 7, c.LastCompletedStep())

	// A report of a step up to StartStep is rejected.
	_, err := c.Step(reportOf(0, 7, 1.0))
	require.ErrorIs(t, err, ErrInvalidReport)

	// Step 8 completes, and the checkpoint interval counts absolute steps.
	actions := mustStep(t, c, reportOf(0, 8, 1.0), reportOf(1, 8, 1.0))
	require.Len(t, actions, 2)
	assert.Equal(t, 8, actions[0].(StepSummary).Step)
	assert.Equal(t, Checkpoint{Generation: 1, Step: 8}, actions[1])

	mustStep(t, c, reportOf(0, 9, 1.0), reportOf(1, 9, 1.0))
	actions = mustStep(t, c, reportOf(0, 10, 1.0), reportOf(1, 10, 1.0))
	assert.Equal(t, Done{Generation: 1, Step: 10}, actions[len(actions)-1])
	assert.Equal(t, PhaseDone, c.Phase())
}

func TestStartStepValidated(t *testing.T) {
	for _, start := range []int{-1, 11} {
		cfg := testConfig(2)
		cfg.StartStep = start
		err := cfg.Validate()
		require.Error(t, err, "StartStep %d", start)
		assert.Contains(t, err.Error(), "StartStep")
	}
}

func TestResumedAfterLastStepEndsAtRendezvous(t *testing.T) {
	cfg := testConfig(2)
	cfg.StartStep = cfg.TotalSteps
	c := newTestCoordinator(t, cfg)
	mustStep(t, c, joinOf("n0", -1))

	actions := mustStep(t, c, joinOf("n1", -1))

	require.Len(t, actions, 3)
	assert.Equal(t, 10, actions[0].(JoinAccepted).StartStep)
	assert.Equal(t, Done{Generation: 1, Step: 10}, actions[2])
	assert.Equal(t, PhaseDone, c.Phase())
}
