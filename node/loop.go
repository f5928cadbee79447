package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/ringtune/ringtune/collective"
	"github.com/ringtune/ringtune/data"
	"github.com/ringtune/ringtune/internal/sysmem"
	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
	"github.com/ringtune/ringtune/train"
)

// reportTimeout bounds one step report. The reply waits for every rank's
// report of the step, and ranks finish a step within moments of each other
// because its last all-reduce ends on all of them together.
const reportTimeout = 5 * time.Minute

// doneEventWait bounds the wait for the DONE event after a join was rejected
// because the job ended.
const doneEventWait = 5 * time.Second

// failureGrace is how long a node whose ring or step report failed waits for
// the coordinator's account of the failure. FAILED names the lost rank more
// reliably than the ring's neighbours can, and after REFORM the node joins the
// re-formed ring. A host that vanishes without closing its
// connections takes the coordinator the gossip suspicion time to declare dead.
const failureGrace = 30 * time.Second

// reformSignal is the cancel cause of a generation's context when the
// coordinator re-forms the ring.
type reformSignal struct{ event *pb.JobEvent }

func (r *reformSignal) Error() string {
	return fmt.Sprintf("the ring re-forms under generation %d: %s", r.event.Generation, r.event.Reason)
}

// reportError marks a failed step report, which a re-formed ring explains.
type reportError struct{ err error }

func (e *reportError) Error() string { return e.err.Error() }
func (e *reportError) Unwrap() error { return e.err }

// run joins the job and trains, once per ring generation: when the coordinator
// re-forms the ring after a lost rank, the node abandons its step, joins again
// with the state of its last completed step and goes on. It leaves the watch
// stream open, so that the coordinator learns of the node's exit from its Leave
// call rather than from a broken stream; Run closes the stream after Leave
// through n.stopWatch.
func (n *runner) run(parent context.Context) (*Result, error) {
	if err := n.join(parent); err != nil {
		return nil, err
	}
	n.side.registerRank(n.rank)
	n.side.setServing(true)
	defer n.side.setServing(false)

	// A FAILED event from the coordinator cancels everything this node waits
	// on, and a REFORM event the current generation.
	ctx, cancel := context.WithCancelCause(parent)
	n.stopWatch = func() { cancel(nil) }
	events, err := n.client.Watch(ctx, n.cfg.NodeID)
	if err != nil {
		return nil, fmt.Errorf("watch the job: %w", err)
	}
	failed := make(chan *JobError, 1)
	n.reforms = make(chan *pb.JobEvent, 1)
	n.done = make(chan struct{})
	go func() {
		for ev := range events {
			switch ev.Kind {
			case pb.JobEventKind_JOB_EVENT_KIND_DONE:
				close(n.done)
				return
			case pb.JobEventKind_JOB_EVENT_KIND_FAILED:
				jobErr := &JobError{Rank: int(ev.Rank), Reason: ev.Reason}
				failed <- jobErr
				cancel(jobErr)
				return
			case pb.JobEventKind_JOB_EVENT_KIND_REFORM:
				// Keep only the newest event. The generation's monitor may put
				// one back meanwhile, so the loop drains the slot until its
				// non-blocking send succeeds.
				for sent := false; !sent; {
					select {
					case n.reforms <- ev:
						sent = true
					default:
						select {
						case <-n.reforms:
						default:
						}
					}
				}
			}
		}
	}()

	for {
		res, err := n.runGeneration(ctx)
		var reform *reformSignal
		switch {
		case err == nil && n.rank == 0:
			return res, nil
		case err == nil:
			// The other ranks stay until the job ends: when rank 0 is lost
			// before it wrote the result, its replacement takes their state.
			n.finished = res
			if reform, err = n.awaitEnd(parent, failed); reform == nil {
				return res, err
			}
		default:
			// Prefer the coordinator's account of a failure to the local symptom.
			if cause := context.Cause(ctx); cause != nil && parent.Err() == nil {
				var jobErr *JobError
				if errors.As(cause, &jobErr) {
					return nil, jobErr
				}
			}
			if !errors.As(err, &reform) {
				reform, err = n.awaitVerdict(parent, failed, err)
			}
			if reform == nil {
				return nil, err
			}
		}

		n.log.Warn("the ring re-forms, joining again", "next_generation", reform.event.Generation,
			"lost_rank", reform.event.Rank, "reason", reform.event.Reason, "err", err)
		n.closeGeneration()
		if err := n.join(ctx); err != nil {
			if cause := context.Cause(ctx); cause != nil && parent.Err() == nil {
				var jobErr *JobError
				if errors.As(cause, &jobErr) {
					return nil, jobErr
				}
			}
			if res := n.finishedMeanwhile(); res != nil {
				return res, nil
			}
			return nil, err
		}
		n.side.registerRank(n.rank)
	}
}

// awaitEnd waits, on a rank other than 0 that completed its part of the
// job, for the coordinator to end the job. It returns the REFORM to follow
// when a rank was lost before rank 0 wrote the result, nil when the job is
// done, or the error of a failed job.
func (n *runner) awaitEnd(parent context.Context, failed <-chan *JobError) (*reformSignal, error) {
	n.log.Info("waiting for rank 0 to write the result")
	for {
		select {
		case <-n.done:
			return nil, nil
		case jobErr := <-failed:
			return nil, jobErr
		case ev := <-n.reforms:
			if ev.Generation > n.joined.Generation {
				return &reformSignal{event: ev}, nil
			}
		case <-parent.Done():
			return nil, fmt.Errorf("stopped while rank 0 writes the result: %w", context.Cause(parent))
		}
	}
}

// finishedMeanwhile returns the result of this node's completed work when
// the job became done while the node joined a re-formed ring: rank 0 wrote
// the result before the ring re-formed. The DONE event and the join's
// rejection travel on different streams, so it waits for the event a while.
func (n *runner) finishedMeanwhile() *Result {
	if n.finished == nil {
		return nil
	}
	select {
	case <-n.done:
		return n.finished
	case <-time.After(doneEventWait):
		return nil
	}
}

// awaitVerdict waits, after a step failed with err, for the coordinator to
// name the failure, when err is a symptom of a lost rank (a broken ring or a
// refused step report). It returns the REFORM to follow, or the error to end
// the run with. Other errors are this node's own and need no wait.
func (n *runner) awaitVerdict(parent context.Context, failed <-chan *JobError, err error) (*reformSignal, error) {
	var fault *collective.FaultError
	var report *reportError
	if parent.Err() != nil || (!errors.As(err, &fault) && !errors.As(err, &report)) {
		return nil, err
	}
	timer := time.NewTimer(failureGrace)
	defer timer.Stop()
	for {
		select {
		case jobErr := <-failed:
			return nil, fmt.Errorf("%w (locally: %v)", jobErr, err)
		case ev := <-n.reforms:
			if ev.Generation > n.joined.Generation {
				return &reformSignal{event: ev}, err
			}
		case <-n.done:
			// The job ended already, so no verdict follows.
			return nil, err
		case <-parent.Done():
			return nil, err
		case <-timer.C:
			return nil, fmt.Errorf("%w (the coordinator named no cause within %v)", err, failureGrace)
		}
	}
}

// runGeneration trains under the current ring generation until the job ends
// or the coordinator re-forms the ring, which cancels the generation with a
// reformSignal.
func (n *runner) runGeneration(parent context.Context) (*Result, error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	stop := make(chan struct{})
	defer close(stop)
	generation := n.joined.Generation
	go func() {
		for {
			select {
			case ev := <-n.reforms:
				if ev.Generation > generation {
					cancel(&reformSignal{event: ev})
					// Put it back for awaitVerdict, unless a newer one came.
					select {
					case n.reforms <- ev:
					default:
					}
					return
				}
			case <-stop:
				return
			}
		}
	}()

	res, err := n.train(ctx)
	if err != nil {
		var reform *reformSignal
		if cause := context.Cause(ctx); errors.As(cause, &reform) && parent.Err() == nil {
			return nil, fmt.Errorf("%w (locally: %v)", reform, err)
		}
	}
	return res, err
}

// closeGeneration releases the ring of the generation that ended. The model
// and the optimizer state stay: they hold the state of the last completed step.
func (n *runner) closeGeneration() {
	if n.stepper != nil {
		n.stepper.Close()
		n.stepper = nil
	}
	if n.comm != nil {
		n.comm.Close()
		n.comm = nil
	}
}

func (n *runner) train(ctx context.Context) (*Result, error) {
	recovering := n.joined.SourceRank >= 0
	var resumed *TrainerState
	if n.model == nil {
		var err error
		if resumed, err = n.buildModel(); err != nil {
			return nil, err
		}
	}
	if recovering {
		var st TrainerState
		if err := json.Unmarshal(n.joined.TrainerState, &st); err != nil {
			return nil, fmt.Errorf("the coordinator sent an invalid trainer state of rank %d: %w", n.joined.SourceRank, err)
		}
		if st.Step != int(n.joined.StartStep) {
			return nil, fmt.Errorf("the coordinator sent the trainer state of step %d for a start after step %d", st.Step, n.joined.StartStep)
		}
		resumed = &st
	}
	world := int(n.joined.WorldSize)
	totalSteps := int(n.joined.TotalSteps)

	// The sampler follows the coordinator's shard plan.
	plan := data.ShardPlan{
		Seed: n.joined.Shard.GetSeed(), Epoch: int(n.joined.Shard.GetEpoch()),
		WorldSize: world, Rank: n.rank, BatchSize: n.job.Batch.MicroBatchSize,
		Shuffle: n.job.Shuffle(),
	}
	sampler, err := data.NewSampler(n.in.Dataset.Train.Len(), plan)
	if err != nil {
		return nil, err
	}
	startStep, skips := 0, 0
	if resumed != nil {
		startStep = resumed.Step
	}
	if startStep != int(n.joined.StartStep) {
		return nil, fmt.Errorf("this node resumes after step %d, but the coordinator after step %d: pass the same --resume to the coordinator and every node", startStep, n.joined.StartStep)
	}
	if resumed != nil {
		if err := sampler.Restore(resumed.Sampler); err != nil {
			return nil, fmt.Errorf("resume: %w: the data files, data.seq_len, packing, the eval split or cluster.nodes differ from the run that wrote the checkpoint", err)
		}
		startStep, skips = resumed.Step, resumed.ConsecutiveSkips
		if startStep > totalSteps {
			return nil, fmt.Errorf("resume: the checkpoint is at step %d, and the job has %d steps: raise schedule.steps to train further", startStep, totalSteps)
		}
	}

	// Form the ring, then start every replica from the same state: rank 0's
	// weights in a new job, a survivor's weights and optimizer state after a
	// lost rank.
	commCfg := collective.DefaultConfig()
	commCfg.JobID, commCfg.Generation = n.job.JobID, n.joined.Generation
	commCfg.Rank, commCfg.WorldSize, commCfg.Peers = n.rank, world, n.joined.Ring
	commCfg.DType = n.job.WireDType()
	// The communicator adds rank and generation to its records itself.
	commCfg.Logger = n.cfg.Logger.With("node", n.cfg.NodeID, "job", n.job.JobID)
	if n.comm, err = collective.New(ctx, commCfg, n.endpoint); err != nil {
		return nil, fmt.Errorf("forming the ring: %w", err)
	}
	n.stepper, err = train.New(n.model, n.opt, n.comm, train.Config{
		BucketBytes: n.job.BucketBytes(),
		MaxGradNorm: n.job.MaxGradNorm(),
		Schedule:    n.job.LRSchedule(totalSteps),
	})
	if err != nil {
		return nil, err
	}
	if recovering {
		begin := time.Now()
		if err := n.stepper.BroadcastState(ctx, int(n.joined.SourceRank)); err != nil {
			return nil, err
		}
		n.model.SetDropoutStep(resumed.DropoutStep)
		if n.opt.StepCount() != resumed.OptimizerStep {
			return nil, fmt.Errorf("rank %d sent an optimizer at step %d with a trainer state at step %d", n.joined.SourceRank, n.opt.StepCount(), resumed.OptimizerStep)
		}
		if n.rank == int(n.joined.SourceRank) {
			n.log.Info("sent this rank's state to the re-formed ring", "step", startStep, "seconds", time.Since(begin).Seconds())
		} else {
			n.log.Info("took over the state of a survivor", "source_rank", n.joined.SourceRank, "step", startStep,
				"seconds", time.Since(begin).Seconds())
		}
	} else if err := n.stepper.SyncWeights(ctx); err != nil {
		return nil, err
	}
	n.stepper.SetConsecutiveSkips(skips)

	var log *metricsLog
	if n.rank == 0 {
		lock, err := LockOutput(n.job.Output)
		if err != nil && recovering {
			lock, err = n.awaitOutputLock(ctx, err)
		}
		if err != nil {
			return nil, err
		}
		defer lock.Close()
		check := CheckFreshOutput
		switch {
		case recovering:
			// The output holds this job's own checkpoints.
			check = func(string) error { return nil }
		case startStep > 0:
			check = func(output string) error { return CheckResumeOutput(output, startStep) }
		}
		if err := check(n.job.Output); err != nil {
			return nil, err
		}
		removeStaleTemps(n.job.Output)
		removeStaleTemps(filepath.Join(n.job.Output, checkpointsDir))
		if log, err = openMetricsLog(n.job.Output, startStep); err != nil {
			return nil, err
		}
		defer log.close()
	}
	loop := &stepLoop{runner: n, sampler: sampler, total: totalSteps, metrics: log, start: time.Now(),
		lastLoss: math.NaN(), evalLoss: math.NaN()}
	if resumed != nil && resumed.Loss != nil {
		loop.lastLoss = *resumed.Loss
	}
	if recovering || (startStep > 0 && startStep == totalSteps) {
		if err := loop.catchUp(ctx, startStep, skips, recovering); err != nil {
			return nil, err
		}
	}
	return loop.run(ctx, startStep)
}

// catchUp runs on every rank before the first step of a ring re-formed after
// a lost rank, or of a run that starts at its last step. The lost rank may
// have taken the start step's evaluation, metrics line and checkpoint with
// it, so the evaluation runs again where one was due, and rank 0 writes the
// line and the checkpoint where they are missing. The line carries the loss
// and the evaluation only: the step's other statistics went with the failed
// generation. On rank 0, the elapsed time goes on from the last line.
func (l *stepLoop) catchUp(ctx context.Context, startStep, skips int, recovering bool) error {
	if recovering && l.metrics != nil {
		l.start = time.Now().Add(-l.metrics.lastElapsed)
	}
	if startStep == 0 {
		// Lost before the first step: nothing of a step can be missing.
		return nil
	}
	line := MetricsLine{Step: startStep, Epoch: l.sampler.Epoch(), Loss: finiteOrNil(l.lastLoss), Recovered: true}
	if steps := l.opt.StepCount(); steps > 0 {
		line.LR = l.job.LRSchedule(l.total).LR(steps)
	}
	// A run that is not recovering starts at its last step here.
	evaluated := l.evalDue(startStep, &pb.StepDecision{})
	if evaluated {
		if err := l.evaluate(ctx, startStep, &line); err != nil {
			return err
		}
	}
	if !recovering || l.metrics == nil {
		return nil
	}
	interval := l.job.Checkpoint.EverySteps
	checkpointDue := interval > 0 && (startStep%interval == 0 || startStep == l.total)
	if checkpointDue {
		if _, err := os.Stat(CheckpointPath(l.job.Output, startStep)); err == nil {
			checkpointDue = false
		}
	}
	if checkpointDue {
		line.Checkpoint = CheckpointPath(l.job.Output, startStep)
	}

	// The line goes first, as after every step.
	switch {
	case l.metrics.lastStep < startStep:
		l.log.Warn("metrics.jsonl has no line for the step the ring re-formed at, writing one with its loss and evaluation only",
			"step", startStep, "last_line_step", l.metrics.lastStep)
		line.ElapsedSeconds = time.Since(l.start).Seconds()
		line.Time = time.Now().UTC().Format(time.RFC3339Nano)
		if err := l.metrics.write(line); err != nil {
			return err
		}
	case l.metrics.lastStep == startStep:
		if err := l.completeLastLine(line, evaluated); err != nil {
			return err
		}
	}
	if checkpointDue {
		l.log.Warn("writing the checkpoint that was due at the step the ring re-formed at", "step", startStep)
		if err := l.checkpoint(startStep, skips); err != nil {
			return fmt.Errorf("step %d: checkpoint: %w", startStep, err)
		}
		l.lastCheckpoint = startStep
	}
	return nil
}

// completeLastLine adds what the last line of metrics.jsonl, of the step the
// ring re-formed at, lacks: the evaluation run again (when evaluated is set)
// and the checkpoint that is written next. Rank 0 writes such a line without
// both, and without the step's global figures, when its step report fails
// before the ring re-forms, so the completed line is marked recovered.
func (l *stepLoop) completeLastLine(redo MetricsLine, evaluated bool) error {
	var line MetricsLine
	if err := json.Unmarshal(l.metrics.lastLine, &line); err != nil {
		return nil
	}
	addEval := evaluated && line.EvalLoss == nil
	addCheckpoint := redo.Checkpoint != "" && line.Checkpoint == ""
	if !addEval && !addCheckpoint {
		return nil
	}
	if addEval {
		line.EvalLoss, line.EvalPerplexity, line.EvalTokens = redo.EvalLoss, redo.EvalPerplexity, redo.EvalTokens
	}
	if addCheckpoint {
		line.Checkpoint = redo.Checkpoint
	}
	line.Recovered = true
	l.log.Warn("completing the last line of metrics.jsonl after the ring re-formed", "step", line.Step,
		"evaluation", addEval, "checkpoint", addCheckpoint)
	return l.metrics.replaceLast(line)
}

// awaitOutputLock retries the output lock for up to cluster.join_timeout. A
// replacement of rank 0 finds it held when the lost rank 0 is a process that
// hangs rather than died, until something (a liveness probe, the launcher)
// ends that process.
func (n *runner) awaitOutputLock(ctx context.Context, lockErr error) (*os.File, error) {
	n.log.Warn("the output folder is locked, waiting for the lost rank 0 to exit", "output", n.job.Output, "err", lockErr)
	deadline := time.Now().Add(n.job.JoinTimeoutDuration())
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, lockErr
		case <-time.After(time.Second):
		}
		lock, err := LockOutput(n.job.Output)
		if err == nil {
			return lock, nil
		}
		lockErr = err
	}
	return nil, lockErr
}

// stepLoop runs the optimizer steps of one node.
type stepLoop struct {
	*runner
	sampler *data.Sampler
	total   int
	// lastCheckpoint is the step of the newest checkpoint of this run.
	lastCheckpoint int
	metrics        *metricsLog // rank 0 only
	start          time.Time
	// lastLoss is the loss of the last completed step, NaN before the first.
	lastLoss float64
	evalLoss float64
}

func (l *stepLoop) run(ctx context.Context, startStep int) (*Result, error) {
	res := &Result{Rank: l.rank, WorldSize: int(l.joined.WorldSize), Steps: startStep, Loss: l.lastLoss, EvalLoss: math.NaN()}
	if startStep == 0 && l.job.Eval.AtStart && l.hasEval() {
		line := MetricsLine{Step: 0, Time: time.Now().UTC().Format(time.RFC3339Nano)}
		if err := l.evaluate(ctx, 0, &line); err != nil {
			return nil, err
		}
		if l.metrics != nil {
			if err := l.metrics.write(line); err != nil {
				return nil, err
			}
		}
	}
	l.lastCheckpoint = max(l.lastCheckpoint, startStep)
	for step := startStep + 1; step <= l.total; step++ {
		// The state after the previous step, which a failed step leaves in the
		// weights and the optimizer, but not in the sampler and the dropout step.
		before := l.snapshot(step - 1)
		l.completed = &before
		stepStart := time.Now()
		batches, err := l.nextMicroBatches()
		if err != nil {
			return nil, l.salvage(before, err)
		}
		stats, err := l.stepper.Step(ctx, batches)
		if err != nil {
			return nil, l.salvage(before, fmt.Errorf("step %d: %w", step, err))
		}
		if stats.Skipped {
			l.log.Warn("skipped the update: the loss or the gradient norm is not finite",
				"step", step, "loss", stats.Loss, "grad_norm", stats.GradNorm, "in_a_row", stats.ConsecutiveSkips)
		}

		// From here on the weights are those after this step on every rank,
		// because its all-reduce completed.
		l.lastLoss = stats.Loss
		after := l.snapshotAfter(step, stats)
		l.completed = &after
		decision, err := l.report(ctx, step, stats)
		if err != nil {
			// The coordinator's summary is missing, so the global figures other
			// than the target count stay zero in this line.
			partial := stepLine(step, l.sampler.Epoch(), stats, &pb.StepDecision{}, world(l), time.Since(stepStart), time.Since(l.start))
			partial.TargetTokens = int64(stats.GlobalTargetTokens)
			partial.Recovered = true
			if l.metrics != nil && l.metrics.write(partial) != nil {
				return nil, err
			}
			return nil, l.salvage(after, err)
		}

		line := stepLine(step, l.sampler.Epoch(), stats, decision, world(l), time.Since(stepStart), time.Since(l.start))
		if l.evalDue(step, decision) {
			if err := l.evaluate(ctx, step, &line); err != nil {
				// No line and no checkpoint of this step: a resume then
				// starts from an earlier checkpoint and runs the evaluation again.
				return nil, err
			}
		}
		// The line goes first, so that a checkpoint never exists without the
		// line of its step; a line without a checkpoint is dropped on resume.
		checkpointDue := decision.Checkpoint && l.rank == 0
		if checkpointDue {
			line.Checkpoint = CheckpointPath(l.job.Output, step)
		}
		if l.metrics != nil {
			if err := l.metrics.write(line); err != nil {
				return nil, err
			}
		}
		if checkpointDue {
			if err := l.checkpoint(step, stats.ConsecutiveSkips); err != nil {
				return nil, fmt.Errorf("step %d: checkpoint: %w", step, err)
			}
			l.lastCheckpoint = step
		}
		l.side.observeStep(step, stats, line)
		l.log.Info("step", "step", step, "loss", stats.Loss, "lr", stats.LR, "grad_norm", stats.GradNorm,
			"tokens", stats.Tokens, "bytes_sent", stats.BytesSent, "compute_s", stats.Compute.Seconds(),
			"exposed_allreduce_s", stats.ExposedAllReduce.Seconds())

		res.Steps, res.Loss = step, stats.Loss
		if stats.ConsecutiveSkips >= l.job.MaxNonFiniteSteps {
			return nil, fmt.Errorf("step %d: %d steps in a row had a non-finite loss or gradient norm (max_nonfinite_steps is %d): lower optimizer.lr, or check the data and the model weights",
				step, stats.ConsecutiveSkips, l.job.MaxNonFiniteSteps)
		}
		if decision.Stop {
			break
		}
	}
	res.EvalLoss = l.evalLoss

	if l.rank == 0 {
		out, err := l.writeFinal(res)
		if err != nil {
			return nil, err
		}
		res.Output = out
	}
	return res, nil
}

func world(l *stepLoop) int { return int(l.joined.WorldSize) }

// nextMicroBatches takes the step's micro-batches from the sampler. A step
// never spans two epochs: when the epoch runs out, the step ends with the
// micro-batches it has, as in transformers' Trainer, and the next step starts
// the next epoch. Every rank has as many micro-batches per epoch, so all ranks
// take the same number.
func (l *stepLoop) nextMicroBatches() ([]*data.Batch, error) {
	batches := make([]*data.Batch, 0, l.job.Batch.GradAccumSteps)
	for range l.job.Batch.GradAccumSteps {
		indices, ok := l.sampler.Next()
		if !ok {
			if len(batches) > 0 {
				break
			}
			l.sampler.SetEpoch(l.sampler.Epoch() + 1)
			if indices, ok = l.sampler.Next(); !ok {
				return nil, errors.New("the sampler yields no rows for this rank: the dataset has fewer rows than ranks")
			}
		}
		batch, err := data.NewBatch(l.in.Dataset.Train, indices)
		if err != nil {
			return nil, err
		}
		batches = append(batches, batch)
	}
	return batches, nil
}

// report sends the step's stats to the coordinator and returns its decisions.
func (l *stepLoop) report(ctx context.Context, step int, stats train.Stats) (*pb.StepDecision, error) {
	ctx, cancel := context.WithTimeout(ctx, reportTimeout)
	defer cancel()
	loss := stats.Loss
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		loss = 0 // protobuf carries NaN, but the coordinator's averages should not
	}
	decision, err := l.client.Report(ctx, &pb.StepReport{
		NodeId:             l.cfg.NodeID,
		Rank:               int32(l.rank),
		Generation:         l.joined.Generation,
		Step:               int32(step),
		Loss:               loss,
		Tokens:             int64(stats.TargetTokens),
		BytesSent:          stats.BytesSent,
		ComputeNs:          stats.Compute.Nanoseconds(),
		AllreduceNs:        stats.AllReduce.Nanoseconds(),
		ExposedAllreduceNs: stats.ExposedAllReduce.Nanoseconds(),
		PeakMemoryBytes:    sysmem.PeakRSSBytes(),
		GradNorm:           stats.GradNorm,
		Lr:                 stats.LR,
		Skipped:            stats.Skipped,
	})
	if err != nil {
		return nil, &reportError{fmt.Errorf("step %d: report to the coordinator: %w", step, err)}
	}
	if int(decision.Step) != step || decision.Generation != l.joined.Generation {
		return nil, fmt.Errorf("step %d: the coordinator replied for step %d of generation %d, expected generation %d",
			step, decision.Step, decision.Generation, l.joined.Generation)
	}
	return decision, nil
}

// hasEval reports whether the job has eval rows.
func (l *stepLoop) hasEval() bool {
	return l.in.Dataset.Eval != nil && l.in.Dataset.Eval.Len() > 0
}

func (l *stepLoop) evalDue(step int, decision *pb.StepDecision) bool {
	if !l.hasEval() {
		return false
	}
	every := l.job.Eval.EverySteps
	return step == l.total || decision.Stop || (every > 0 && step%every == 0)
}

func (l *stepLoop) checkpoint(step, skips int) error {
	st := l.snapshot(step)
	st.ConsecutiveSkips = skips
	begin := time.Now()
	path, err := saveCheckpoint(l.job.Output, l.model, l.opt, st, l.job.Model.Base, l.job.KeepCheckpoints())
	if path == "" {
		return err
	}
	if err != nil {
		l.log.Warn("the checkpoint is written, but removing older checkpoints failed", "step", step, "path", path, "err", err)
	}
	l.log.Info("checkpoint written", "step", step, "path", path, "seconds", time.Since(begin).Seconds())
	return nil
}

// snapshot returns the trainer state after step, taken before the next step
// moves the sampler and the dropout step.
func (l *stepLoop) snapshot(step int) TrainerState {
	return TrainerState{
		Step:             step,
		Sampler:          l.sampler.State(),
		DropoutStep:      l.model.DropoutStep(),
		ConsecutiveSkips: l.stepper.ConsecutiveSkips(),
		Loss:             finiteOrNil(l.lastLoss),
		Mode:             l.job.Mode,
		WorldSize:        world(l),
		ConfigHash:       l.in.Fingerprint.ConfigHash,
		JobID:            l.job.JobID,
	}
}

// snapshotAfter returns the trainer state right after step completed.
func (l *stepLoop) snapshotAfter(step int, stats train.Stats) TrainerState {
	st := l.snapshot(step)
	st.ConsecutiveSkips = stats.ConsecutiveSkips
	return st
}

// salvage writes, on rank 0, a checkpoint of the last completed step when the
// step loop ends with cause after the newest checkpoint. A stopped or failed run
// then resumes from its last step rather than its last periodic checkpoint. It
// returns cause, with a failed write added.
func (l *stepLoop) salvage(st TrainerState, cause error) error {
	// A checkpoint of the last step could not be resumed, because the job has
	// no step after it. A resume starts from the previous checkpoint instead.
	if l.rank != 0 || st.Step <= l.lastCheckpoint || st.Step < 1 || st.Step >= l.total {
		return cause
	}
	begin := time.Now()
	path, err := saveCheckpoint(l.job.Output, l.model, l.opt, st, l.job.Model.Base, l.job.KeepCheckpoints())
	if path != "" && err != nil {
		l.log.Warn("removing older checkpoints failed", "path", path, "err", err)
	} else if err != nil {
		l.log.Error("writing a checkpoint of the last completed step failed", "step", st.Step, "err", err)
		return fmt.Errorf("%w (and the checkpoint of step %d failed: %v)", cause, st.Step, err)
	}
	l.log.Warn("wrote a checkpoint of the last completed step after the step loop ended", "step", st.Step, "path", path,
		"seconds", time.Since(begin).Seconds(), "cause", cause)
	return cause
}
