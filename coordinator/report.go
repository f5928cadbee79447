package coordinator

import (
	"fmt"
	"time"
)

// handleStepReport stores one rank's report and, for each step that every rank has
// now reported, in step order, emits its StepSummary, a Checkpoint when one is due
// and Finish or Done after the last step.
func (c *Coordinator) handleStepReport(report StepReport) ([]Action, error) {
	if c.finished() {
		return nil, fmt.Errorf("%w: report of rank %d for step %d after the job became %v",
			ErrJobFinished, report.Rank, report.Step, c.phase)
	}
	if c.phase != PhaseRunning {
		return nil, fmt.Errorf("%w: report of rank %d for step %d during %v",
			ErrWrongPhase, report.Rank, report.Step, c.phase)
	}
	if err := c.checkStepReport(report); err != nil {
		return nil, err
	}

	reports := c.pendingReports[report.Step]
	if reports == nil {
		reports = make([]*StepReport, c.cfg.WorldSize)
		c.pendingReports[report.Step] = reports
	}
	if reports[report.Rank] != nil {
		return nil, fmt.Errorf("%w: rank %d already reported step %d", ErrDuplicateReport, report.Rank, report.Step)
	}
	reports[report.Rank] = &report

	var actions []Action
	for c.phase == PhaseRunning && stepComplete(c.pendingReports[c.lastCompletedStep+1]) {
		actions = append(actions, c.completeStep()...)
	}
	return actions, nil
}

func (c *Coordinator) checkStepReport(report StepReport) error {
	if report.Generation < c.generation {
		return fmt.Errorf("%w: rank %d reported step %d for generation %d, current generation is %d",
			ErrStaleGeneration, report.Rank, report.Step, report.Generation, c.generation)
	}
	if report.Generation > c.generation {
		return fmt.Errorf("%w: rank %d reported step %d for generation %d, current generation is %d",
			ErrFutureGeneration, report.Rank, report.Step, report.Generation, c.generation)
	}
	if report.Rank < 0 || report.Rank >= c.cfg.WorldSize {
		return fmt.Errorf("%w: rank %d is out of range 0 to %d", ErrInvalidReport, report.Rank, c.cfg.WorldSize-1)
	}

	firstStep := c.lastCompletedStep + 1
	lastStep := min(c.lastCompletedStep+maxStepsAhead, c.cfg.TotalSteps)
	if report.Step < firstStep || report.Step > lastStep {
		return fmt.Errorf("%w: rank %d reported step %d, expected a step from %d to %d",
			ErrInvalidReport, report.Rank, report.Step, firstStep, lastStep)
	}

	negative := ""
	switch {
	case report.Tokens < 0:
		negative = "tokens"
	case report.BytesSent < 0:
		negative = "bytes sent"
	case report.ComputeTime < 0:
		negative = "compute time"
	case report.AllReduceTime < 0:
		negative = "all-reduce time"
	case report.ExposedAllReduceTime < 0:
		negative = "exposed all-reduce time"
	case report.PeakMemory < 0:
		negative = "peak memory"
	}
	if negative != "" {
		return fmt.Errorf("%w: rank %d reported negative %s for step %d", ErrInvalidReport, report.Rank, negative, report.Step)
	}
	return nil
}

func stepComplete(reports []*StepReport) bool {
	if reports == nil {
		return false
	}
	for _, report := range reports {
		if report == nil {
			return false
		}
	}
	return true
}

// completeStep summarizes the step after lastCompletedStep, whose reports are all in.
func (c *Coordinator) completeStep() []Action {
	step := c.lastCompletedStep + 1
	summary := summarize(c.generation, step, c.pendingReports[step])
	delete(c.pendingReports, step)
	c.lastCompletedStep = step

	actions := []Action{summary}
	if c.checkpointDue(step) {
		actions = append(actions, Checkpoint{Generation: c.generation, Step: step})
	}
	if step == c.cfg.TotalSteps {
		actions = append(actions, c.afterLastStep()...)
	}
	return actions
}

func (c *Coordinator) checkpointDue(step int) bool {
	interval := c.cfg.CheckpointInterval
	return interval > 0 && (step%interval == 0 || step == c.cfg.TotalSteps)
}

// summarize aggregates the reports of every rank for one step.
func summarize(generation uint64, step int, reports []*StepReport) StepSummary {
	summary := StepSummary{Generation: generation, Step: step, LR: reports[0].LR}
	var weightedLoss, lossSum float64
	var wallTime time.Duration
	for _, report := range reports {
		weightedLoss += report.Loss * float64(report.Tokens)
		lossSum += report.Loss
		summary.Tokens += report.Tokens
		summary.BytesSent += report.BytesSent
		summary.MaxComputeTime = max(summary.MaxComputeTime, report.ComputeTime)
		summary.MaxAllReduceTime = max(summary.MaxAllReduceTime, report.AllReduceTime)
		summary.MaxExposedAllReduceTime = max(summary.MaxExposedAllReduceTime, report.ExposedAllReduceTime)
		summary.MaxPeakMemory = max(summary.MaxPeakMemory, report.PeakMemory)
		wallTime = max(wallTime, report.ComputeTime+report.ExposedAllReduceTime)
	}

	if summary.Tokens > 0 {
		summary.MeanLoss = weightedLoss / float64(summary.Tokens)
	} else {
		summary.MeanLoss = lossSum / float64(len(reports))
	}
	if wallTime > 0 {
		summary.TokensPerSecond = float64(summary.Tokens) / wallTime.Seconds()
	}
	return summary
}
