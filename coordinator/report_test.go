package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStepReportDropped(t *testing.T) {
	withReport := func(modify func(*StepReport)) StepReport {
		report := reportOf(1, 1, 2.0)
		modify(&report)
		return report
	}
	tests := []struct {
		name    string
		phase   Phase
		report  StepReport
		wantErr error
		wantMsg string
	}{
		{"during rendezvous", PhaseRendezvous, reportOf(0, 1, 2), ErrWrongPhase, "report of rank 0 for step 1 during rendezvous"},
		{"after failure", PhaseFailed, reportOf(0, 1, 2), ErrJobFinished, "after the job became failed"},
		{"old generation", PhaseRunning, withReport(func(r *StepReport) { r.Generation = 0 }), ErrStaleGeneration, "rank 1 reported step 1 for generation 0, current generation is 1"},
		{"future generation", PhaseRunning, withReport(func(r *StepReport) { r.Generation = 2 }), ErrFutureGeneration, "for generation 2, current generation is 1"},
		{"rank above range", PhaseRunning, withReport(func(r *StepReport) { r.Rank = 3 }), ErrInvalidReport, "rank 3 is out of range 0 to 2"},
		{"negative rank", PhaseRunning, withReport(func(r *StepReport) { r.Rank = -1 }), ErrInvalidReport, "rank -1 is out of range 0 to 2"},
		{"step zero", PhaseRunning, withReport(func(r *StepReport) { r.Step = 0 }), ErrInvalidReport, "rank 1 reported step 0, expected a step from 1 to 10"},
		{"step past total", PhaseRunning, withReport(func(r *StepReport) { r.Step = 11 }), ErrInvalidReport, "expected a step from 1 to 10"},
		{"negative tokens", PhaseRunning, withReport(func(r *StepReport) { r.Tokens = -1 }), ErrInvalidReport, "rank 1 reported negative tokens for step 1"},
		{"negative bytes", PhaseRunning, withReport(func(r *StepReport) { r.BytesSent = -1 }), ErrInvalidReport, "negative bytes sent"},
		{"negative compute time", PhaseRunning, withReport(func(r *StepReport) { r.ComputeTime = -1 }), ErrInvalidReport, "negative compute time"},
		{"negative all-reduce time", PhaseRunning, withReport(func(r *StepReport) { r.AllReduceTime = -1 }), ErrInvalidReport, "negative all-reduce time"},
		{"negative exposed time", PhaseRunning, withReport(func(r *StepReport) { r.ExposedAllReduceTime = -1 }), ErrInvalidReport, "negative exposed all-reduce time"},
		{"negative peak memory", PhaseRunning, withReport(func(r *StepReport) { r.PeakMemory = -1 }), ErrInvalidReport, "negative peak memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCoordinator(t, testConfig(3))
			if tt.phase != PhaseRendezvous {
				c = startJob(t, testConfig(3))
			}
			if tt.phase == PhaseFailed {
				mustStep(t, c, Dead{NodeID: "n2"})
			}

			actions, err := c.Step(tt.report)

			require.ErrorIs(t, err, tt.wantErr)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.Empty(t, actions)
			assert.Equal(t, tt.phase, c.Phase())
		})
	}
}

func TestStepReportDuplicate(t *testing.T) {
	c := startJob(t, testConfig(2))
	mustStep(t, c, reportOf(0, 1, 2))

	actions, err := c.Step(reportOf(0, 1, 3))

	require.ErrorIs(t, err, ErrDuplicateReport)
	assert.Empty(t, actions)
	// The first report counts: completing the step uses its loss.
	summary := mustStep(t, c, reportOf(1, 1, 2))[0].(StepSummary)
	assert.InDelta(t, 2.0, summary.MeanLoss, 1e-12)
}

func TestStepReportWindow(t *testing.T) {
	cfg := testConfig(2)
	cfg.TotalSteps = 100
	c := startJob(t, cfg)

	_, errInside := c.Step(reportOf(0, maxStepsAhead, 1))
	_, errOutside := c.Step(reportOf(0, maxStepsAhead+1, 1))

	require.NoError(t, errInside)
	require.ErrorIs(t, errOutside, ErrInvalidReport)
}

func TestStepReportOldStep(t *testing.T) {
	c := startJob(t, testConfig(2))
	mustStep(t, c, reportOf(0, 1, 1), reportOf(1, 1, 1))

	_, err := c.Step(reportOf(0, 1, 1))

	require.ErrorIs(t, err, ErrInvalidReport)
	assert.Contains(t, err.Error(), "expected a step from 2 to 10")
}

func TestStepReportOutOfOrder(t *testing.T) {
	c := startJob(t, testConfig(2))

	early := mustStep(t, c, reportOf(0, 1, 1), reportOf(0, 2, 1), reportOf(1, 2, 1))
	both := mustStep(t, c, reportOf(1, 1, 1))

	assert.Empty(t, early, "step 2 must wait for step 1")
	require.Len(t, both, 2)
	assert.Equal(t, 1, both[0].(StepSummary).Step)
	assert.Equal(t, 2, both[1].(StepSummary).Step)
	assert.Equal(t, 2, c.LastCompletedStep())
}

func TestStepSummary(t *testing.T) {
	tests := []struct {
		name    string
		reports []StepReport
		want    StepSummary
	}{
		{
			name: "weighted by tokens",
			reports: []StepReport{
				{Rank: 0, Generation: 1, Step: 1, Loss: 1.0, Tokens: 300, BytesSent: 10,
					ComputeTime: 2 * time.Second, AllReduceTime: time.Second, ExposedAllReduceTime: 0, PeakMemory: 5},
				{Rank: 1, Generation: 1, Step: 1, Loss: 3.0, Tokens: 100, BytesSent: 20,
					ComputeTime: time.Second, AllReduceTime: 3 * time.Second, ExposedAllReduceTime: 2 * time.Second, PeakMemory: 7},
			},
			want: StepSummary{
				Generation: 1, Step: 1,
				MeanLoss:                1.5, // (1·300 + 3·100) / 400
				Tokens:                  400,
				TokensPerSecond:         400.0 / 3, // wall time max(2+0, 1+2) s
				BytesSent:               30,
				MaxComputeTime:          2 * time.Second,
				MaxAllReduceTime:        3 * time.Second,
				MaxExposedAllReduceTime: 2 * time.Second,
				MaxPeakMemory:           7,
			},
		},
		{
			name: "no tokens and no time",
			reports: []StepReport{
				{Rank: 0, Generation: 1, Step: 1, Loss: 1.0},
				{Rank: 1, Generation: 1, Step: 1, Loss: 2.0},
			},
			want: StepSummary{Generation: 1, Step: 1, MeanLoss: 1.5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(len(tt.reports))
			cfg.CheckpointInterval = 0
			c := startJob(t, cfg)
			events := make([]Event, len(tt.reports))
			for i, report := range tt.reports {
				events[i] = report
			}

			actions := mustStep(t, c, events...)

			require.Len(t, actions, 1)
			got := actions[0].(StepSummary)
			assert.InDelta(t, tt.want.MeanLoss, got.MeanLoss, 1e-12)
			assert.InDelta(t, tt.want.TokensPerSecond, got.TokensPerSecond, 1e-9)
			got.MeanLoss, got.TokensPerSecond = tt.want.MeanLoss, tt.want.TokensPerSecond
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestCheckpointDecisions(t *testing.T) {
	tests := []struct {
		name       string
		interval   int
		totalSteps int
		wantSteps  []int
	}{
		{"off", 0, 10, nil},
		{"every step", 1, 3, []int{1, 2, 3}},
		{"divides total", 5, 10, []int{5, 10}},
		{"last step added", 4, 10, []int{4, 8, 10}},
		{"interval past total", 20, 10, []int{10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(2)
			cfg.CheckpointInterval = tt.interval
			cfg.TotalSteps = tt.totalSteps
			c := startJob(t, cfg)

			var gotSteps []int
			var last []Action
			for step := 1; step <= tt.totalSteps; step++ {
				last = mustStep(t, c, reportOf(0, step, 1), reportOf(1, step, 1))
				for _, action := range last {
					if checkpoint, ok := action.(Checkpoint); ok {
						gotSteps = append(gotSteps, checkpoint.Step)
					}
				}
			}

			assert.Equal(t, tt.wantSteps, gotSteps)
			assert.Equal(t, Done{Generation: 1, Step: tt.totalSteps}, last[len(last)-1])
			assert.Equal(t, PhaseDone, c.Phase())
		})
	}
}

func TestStepReportAfterDone(t *testing.T) {
	cfg := testConfig(1)
	cfg.TotalSteps = 1
	c := startJob(t, cfg)
	mustStep(t, c, reportOf(0, 1, 1))

	actions, err := c.Step(reportOf(0, 1, 1))

	require.ErrorIs(t, err, ErrJobFinished)
	assert.Empty(t, actions)
}
