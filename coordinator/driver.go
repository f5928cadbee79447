package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ringtune/ringtune/metrics"
	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// recentDecisions is how many decisions of completed steps the driver keeps, so that
// a rank that sends a report again (after a lost reply) gets the same decision. Ranks
// advance in lockstep, so a retry is at most one step behind the newest decision.
const recentDecisions = 4

// driverState is the part of Server that only the driver goroutine touches. After
// driverDone is closed, handlers may read final and result.
type driverState struct {
	coord *Coordinator

	// nodes contains every node that joined and was not rejected, keyed by node id.
	// Nodes that leave during rendezvous are removed.
	nodes map[string]*nodeState
	// joinWaiters contains the Join calls waiting for their node's acceptance.
	joinWaiters map[string][]chan joinResult
	// reportWaiters contains the Report calls waiting for the summary of a step.
	reportWaiters map[int][]chan reportResult
	// decisions contains the decisions of the last recentDecisions completed steps.
	decisions map[int]*pb.StepDecision
	// watchers contains the open Watch streams, keyed by node id.
	watchers map[string]map[*watcher]struct{}
	// openWatchers counts the streams in watchers.
	openWatchers int
	// lossDetail is appended to the reason of a FailJob caused by the event being
	// applied, for example the error a node sent with Leave.
	lossDetail string
	// stopApplied is set once a decision carried a requested stop.
	stopApplied bool
	// reformStart is when the current recovery began, zero outside one.
	reformStart time.Time

	// finished is set once the job is done, failed or stopped. final is the Watch
	// event that every node receives, and result is what Run returns.
	finished bool
	final    *pb.JobEvent
	result   error

	gossipCtx   context.Context
	gossipJoins sync.WaitGroup
}

// holdingWatchers counts the open Watch streams of nodes that have not left.
// Once the job ended, the streams of nodes that left do not hold up the
// shutdown: such a node closes its stream right after its Leave call, unless
// it hangs.
func (d *driverState) holdingWatchers() int {
	n := 0
	for nodeID, streams := range d.watchers {
		if node := d.nodes[nodeID]; node == nil || !node.left {
			n += len(streams)
		}
	}
	return n
}

// awaitingWatch reports whether a node accepted into the ring less than
// watchTimeout before now has neither opened a Watch stream nor left.
func (d *driverState) awaitingWatch(now time.Time, watchTimeout time.Duration) bool {
	for _, node := range d.nodes {
		if !node.acceptedAt.IsZero() && !node.watched && !node.left && now.Sub(node.acceptedAt) < watchTimeout {
			return true
		}
	}
	return false
}

type nodeState struct {
	gossipAddr string
	// rank is the assigned rank, or -1 before the ring forms.
	rank int
	left bool
	// acceptedAt is when the node's join was accepted, and watched is set once
	// it opened a Watch stream.
	acceptedAt time.Time
	watched    bool
}

type joinResult struct {
	resp *pb.JoinResponse
	err  error
}

type reportResult struct {
	decision *pb.StepDecision
	err      error
}

// watcherEvents is the room of a watcher's event channel: a few REFORM events
// and the final one. A node that falls further behind loses the oldest events.
const watcherEvents = 8

// watcher is one open Watch stream.
type watcher struct {
	nodeID string
	events chan *pb.JobEvent
}

func newDriverState(coord *Coordinator) driverState {
	return driverState{
		coord:         coord,
		nodes:         make(map[string]*nodeState),
		joinWaiters:   make(map[string][]chan joinResult),
		reportWaiters: make(map[int][]chan reportResult),
		decisions:     make(map[int]*pb.StepDecision),
		watchers:      make(map[string]map[*watcher]struct{}),
	}
}

// drive runs the driver loop until the job ended and every Watch stream closed, or
// ShutdownTimeout after the job ended. A node accepted into the ring that has not
// opened its stream yet counts as open: a job resumed after its last step ends
// with the joins, before any node watched it. It returns what Run returns.
func (s *Server) drive(ctx context.Context, serveErr <-chan error) error {
	defer close(s.driverDone)
	ticker := time.NewTicker(s.cfg.TickInterval)
	defer ticker.Stop()

	ctxDone := ctx.Done()
	var drainTimeout <-chan time.Time
	for {
		if s.d.finished {
			if s.d.holdingWatchers() == 0 && !s.d.awaitingWatch(time.Now(), s.cfg.WatchTimeout) {
				return s.d.result
			}
			if drainTimeout == nil {
				timer := time.NewTimer(s.cfg.ShutdownTimeout)
				defer timer.Stop()
				drainTimeout = timer.C
			}
		}

		select {
		case fn := <-s.calls:
			fn()
		case <-ticker.C:
			// The ticker's value is the scheduled time, which after a stall of
			// this process lags the clock and would start deadlines in the past.
			now := time.Now()
			s.step(Tick{Now: now}, nil)
			s.checkWatches(now)
		case <-s.stopRequests:
			s.handleStopRequest()
		case <-ctxDone:
			ctxDone = nil
			if !s.d.finished {
				reason := fmt.Sprintf("coordinator shut down: %v", ctx.Err())
				s.finish(s.failedEvent(-1, reason), ctx.Err(), "failed", codes.Unavailable)
			}
		case err := <-serveErr:
			serveErr = nil
			if !s.d.finished {
				reason := fmt.Sprintf("coordinator gRPC server failed: %v", err)
				s.finish(s.failedEvent(-1, reason), &JobError{Rank: -1, Reason: reason}, "failed", codes.Unavailable)
			}
		case <-drainTimeout:
			s.log.Warn("Watch streams still open after the shutdown timeout", "streams", s.d.openWatchers, "timeout", s.cfg.ShutdownTimeout)
			return s.d.result
		}
	}
}

// step applies event and performs the resulting actions. A JoinRejected is sent to
// joinOrigin, the channel of the Join call that sent event.
func (s *Server) step(event Event, joinOrigin chan joinResult) ([]Action, error) {
	actions, err := s.d.coord.Step(event)
	if err != nil {
		s.logDropped(event, err)
		return nil, err
	}
	s.perform(actions, joinOrigin)
	return actions, nil
}

func (s *Server) logDropped(event Event, err error) {
	level := slog.LevelWarn
	switch {
	case errors.Is(err, ErrStaleGeneration), errors.Is(err, ErrJobFinished),
		errors.Is(err, ErrUnknownNode), errors.Is(err, ErrDuplicateReport):
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, "event dropped", "event", fmt.Sprintf("%T", event),
		"generation", s.d.coord.Generation(), "err", err)
}

// perform carries out the actions of one event in order. Step decisions are sent
// before the job's end is announced, so that a node receives the reply to its last
// report before the final Watch event.
func (s *Server) perform(actions []Action, joinOrigin chan joinResult) {
	var decisions []*pb.StepDecision
	byStep := make(map[int]*pb.StepDecision)
	var failure *FailJob
	var done *Done
	var finishing *Finish
	for _, action := range actions {
		switch a := action.(type) {
		case JoinAccepted:
			s.accept(a)
		case JoinRejected:
			s.log.Warn("join rejected", "node", a.NodeID, "generation", a.Generation, "reason", a.Reason)
			if joinOrigin != nil {
				s.removeJoinWaiter(a.NodeID, joinOrigin)
				joinOrigin <- joinResult{err: status.Error(codes.FailedPrecondition, a.Reason)}
			}
		case FailJob:
			failure = &a
		case Reform:
			s.reform(a)
		case StepSummary:
			decision := s.summarize(a)
			decisions = append(decisions, decision)
			byStep[a.Step] = decision
		case Checkpoint:
			s.log.Info("checkpoint requested", "step", a.Step, "generation", a.Generation)
			s.reg.coordinator.IncCheckpoints()
			byStep[a.Step].Checkpoint = true
		case Done:
			// A job that starts at its last step (resumed from the last
			// checkpoint, or re-formed after a rank finished it) has no
			// decision to mark.
			if decision := byStep[a.Step]; decision != nil {
				decision.Stop = true
			}
			done = &a
		case Finish:
			if decision := byStep[a.Step]; decision != nil {
				decision.Stop = true
			}
			finishing = &a
		}
	}

	stopReason := ""
	if reason := s.requestedStop(); reason != "" && !s.d.stopApplied && len(decisions) > 0 {
		last := decisions[len(decisions)-1]
		last.Checkpoint, last.Stop = true, true
		s.d.stopApplied = true
		stopReason = reason
		s.log.Info("stop decision sent", "step", last.Step, "generation", last.Generation, "reason", reason)
	}
	for _, decision := range decisions {
		s.deliverDecision(decision)
	}

	switch {
	case failure != nil:
		reason := failure.Reason + s.d.lossDetail
		code := codes.Aborted
		if failure.Rank < 0 && s.d.coord.LastCompletedStep() == 0 && !s.ringFormed() {
			// During rendezvous, the state machine fails the job only when the join
			// deadline passes.
			code = codes.DeadlineExceeded
		}
		s.finish(s.failedEvent(failure.Rank, reason), &JobError{Rank: failure.Rank, Reason: reason}, "failed", code)
	case done != nil:
		event := &pb.JobEvent{Kind: pb.JobEventKind_JOB_EVENT_KIND_DONE, Generation: done.Generation, Rank: -1, Step: int32(done.Step)}
		s.finish(event, nil, "done", codes.FailedPrecondition)
	case finishing != nil:
		// A requested stop has nothing left to stop.
		s.reg.coordinator.SetPhase(PhaseFinishing.String())
		s.log.Info("last step completed, waiting for rank 0 to write the result", "step", finishing.Step,
			"generation", finishing.Generation)
	case stopReason != "":
		s.finishStopped(stopReason)
	}
}

// currentStep returns the step in progress, or the last step once every rank
// completed it, for logs.
func (s *Server) currentStep() int {
	return min(s.d.coord.LastCompletedStep()+1, s.cfg.Job.TotalSteps)
}

// ringFormed reports whether rendezvous completed.
func (s *Server) ringFormed() bool {
	for _, node := range s.d.nodes {
		if node.rank >= 0 {
			return true
		}
	}
	return false
}

func (s *Server) accept(a JoinAccepted) {
	node := s.d.nodes[a.NodeID]
	firstAcceptance := node != nil && node.rank < 0
	if node != nil {
		node.rank = a.Rank
		if node.acceptedAt.IsZero() {
			node.acceptedAt = time.Now()
		}
		// A node that was declared lost while it ran on (stalled, or cut off
		// for a while) joins again with the Watch stream it kept.
		if len(s.d.watchers[a.NodeID]) > 0 {
			node.watched = true
		}
	}
	s.log.Info("node joined", "node", a.NodeID, "rank", a.Rank, "world_size", a.WorldSize, "generation", a.Generation)
	if a.Rank == a.WorldSize-1 {
		// The acceptances go out in rank order, so the ring is complete now.
		s.reg.coordinator.SetPhase(PhaseRunning.String())
		s.reg.coordinator.SetGeneration(a.Generation)
		s.log.Info("ring formed, job running", "generation", a.Generation, "ring", a.Ring,
			"start_step", a.StartStep, "source_rank", a.SourceRank)
		if !s.d.reformStart.IsZero() {
			s.log.Info("recovered from the lost rank", "generation", a.Generation,
				"seconds", time.Since(s.d.reformStart).Seconds())
			s.d.reformStart = time.Time{}
		}
	}

	resp := &pb.JoinResponse{
		Rank:          int32(a.Rank),
		WorldSize:     int32(a.WorldSize),
		Generation:    a.Generation,
		Ring:          a.Ring,
		Shard:         &pb.ShardPlan{Seed: a.Shard.Seed, Epoch: int32(a.Shard.Epoch), WorldSize: int32(a.Shard.WorldSize)},
		TotalSteps:    int32(s.cfg.Job.TotalSteps),
		StartStep:     int32(a.StartStep),
		GossipAddress: s.GossipAddr(),
		SourceRank:    int32(a.SourceRank),
		TrainerState:  []byte(a.TrainerState),
	}
	for _, ch := range s.d.joinWaiters[a.NodeID] {
		ch <- joinResult{resp: resp}
	}
	delete(s.d.joinWaiters, a.NodeID)

	if firstAcceptance && s.member != nil && node.gossipAddr != "" {
		s.joinGossip(a.NodeID, node.gossipAddr)
	}
}

// joinGossip joins the gossip member of a node in the background, so that the
// coordinator is in the node's cluster even when the node cannot reach it.
func (s *Server) joinGossip(nodeID, addr string) {
	s.d.gossipJoins.Add(1)
	go func() {
		defer s.d.gossipJoins.Done()
		ctx, cancel := context.WithTimeout(s.d.gossipCtx, gossipJoinTimeout)
		defer cancel()
		if err := s.member.Join(ctx, []string{addr}); err != nil {
			s.log.Warn("joining the gossip member of a node failed", "node", nodeID, "gossip_addr", addr, "err", err)
		}
	}()
}

func (s *Server) summarize(a StepSummary) *pb.StepDecision {
	s.log.Debug("step completed", "step", a.Step, "generation", a.Generation, "loss", a.MeanLoss,
		"tokens_per_second", a.TokensPerSecond)
	s.reg.coordinator.ObserveStep(metrics.CoordinatorStep{
		Step:                a.Step,
		MeanLoss:            a.MeanLoss,
		TokensPerSecond:     a.TokensPerSecond,
		BytesSent:           a.BytesSent,
		MaxCompute:          a.MaxComputeTime,
		MaxAllReduce:        a.MaxAllReduceTime,
		MaxExposedAllReduce: a.MaxExposedAllReduceTime,
		MaxPeakMemory:       a.MaxPeakMemory,
	})
	if s.cfg.OnSummary != nil {
		s.cfg.OnSummary(a)
	}
	return &pb.StepDecision{
		Generation: a.Generation,
		Step:       int32(a.Step),
		Summary: &pb.StepSummary{
			MeanLoss:              a.MeanLoss,
			Tokens:                a.Tokens,
			TokensPerSecond:       a.TokensPerSecond,
			BytesSent:             a.BytesSent,
			MaxComputeNs:          a.MaxComputeTime.Nanoseconds(),
			MaxAllreduceNs:        a.MaxAllReduceTime.Nanoseconds(),
			MaxExposedAllreduceNs: a.MaxExposedAllReduceTime.Nanoseconds(),
			MaxPeakMemoryBytes:    a.MaxPeakMemory,
		},
	}
}

func (s *Server) deliverDecision(decision *pb.StepDecision) {
	step := int(decision.Step)
	s.d.decisions[step] = decision
	delete(s.d.decisions, step-recentDecisions)
	for _, ch := range s.d.reportWaiters[step] {
		ch <- reportResult{decision: decision}
	}
	delete(s.d.reportWaiters, step)
}

func (s *Server) failedEvent(rank int, reason string) *pb.JobEvent {
	return &pb.JobEvent{
		Kind:       pb.JobEventKind_JOB_EVENT_KIND_FAILED,
		Generation: s.d.coord.Generation(),
		Rank:       int32(rank),
		Reason:     reason,
		Step:       int32(s.d.coord.LastCompletedStep()),
	}
}

// finishStopped ends the job after a requested stop. The nodes receive DONE with the
// stop reason because the stop decision already made them checkpoint and exit. Run
// returns an error because the job did not run all its steps.
func (s *Server) finishStopped(reason string) {
	reason = "stopped: " + reason
	event := &pb.JobEvent{
		Kind:       pb.JobEventKind_JOB_EVENT_KIND_DONE,
		Generation: s.d.coord.Generation(),
		Rank:       -1,
		Reason:     reason,
		Step:       int32(s.d.coord.LastCompletedStep()),
	}
	if !s.ringFormed() {
		event = s.failedEvent(-1, reason)
	}
	s.finish(event, &JobError{Rank: -1, Reason: reason}, "stopped", codes.Aborted)
}

// finish ends the job. It fails every waiting Join call with joinCode and every
// waiting Report call, and sends final to every Watch stream.
func (s *Server) finish(final *pb.JobEvent, result error, phase string, joinCode codes.Code) {
	s.d.finished = true
	s.ended.Store(true)
	s.d.final = final
	s.d.result = result
	s.setServing(false)
	s.reg.coordinator.SetPhase(phase)

	switch {
	case result == nil:
		s.log.Info("job done", "generation", final.Generation, "step", final.Step)
	case errors.Is(result, context.Canceled):
		// A signal such as Ctrl-C stopped the coordinator's own process.
		s.reg.coordinator.IncFailures()
		s.log.Warn("job stopped", "generation", final.Generation, "step", final.Step, "reason", final.Reason)
	default:
		s.reg.coordinator.IncFailures()
		s.log.Error("job failed", "generation", final.Generation, "rank", final.Rank, "step", final.Step, "reason", final.Reason)
	}

	for nodeID, waiters := range s.d.joinWaiters {
		for _, ch := range waiters {
			ch <- joinResult{err: status.Error(joinCode, final.Reason)}
		}
		delete(s.d.joinWaiters, nodeID)
	}
	for step, waiters := range s.d.reportWaiters {
		for _, ch := range waiters {
			ch <- reportResult{err: s.finalStatus()}
		}
		delete(s.d.reportWaiters, step)
	}
	s.broadcastEvent(final)
}

// broadcastEvent sends event to every open Watch stream without blocking the
// driver. A stream whose channel is full drops its oldest event first.
func (s *Server) broadcastEvent(event *pb.JobEvent) {
	for _, streams := range s.d.watchers {
		for w := range streams {
			for {
				select {
				case w.events <- event:
				default:
					select {
					case <-w.events:
					default:
					}
					continue
				}
				break
			}
		}
	}
}

// reform announces the re-formed ring to every node: reports waiting for a step
// fail, and the Watch streams carry a REFORM event.
func (s *Server) reform(a Reform) {
	a.Reason += s.d.lossDetail
	s.log.Warn("rank lost, re-forming the ring", "rank", a.LostRank, "node", a.LostNodeID,
		"generation", a.Generation, "step", a.Step, "reason", a.Reason)
	s.reg.coordinator.SetPhase("recovering")
	s.reg.coordinator.SetGeneration(a.Generation)
	s.reg.coordinator.IncRestarts()
	if s.d.reformStart.IsZero() {
		s.d.reformStart = time.Now()
	}
	delete(s.d.nodes, a.LostNodeID)
	if s.cfg.OnRankLost != nil {
		s.cfg.OnRankLost(a.LostRank, a.LostNodeID)
	}
	for step, waiters := range s.d.reportWaiters {
		for _, ch := range waiters {
			ch <- reportResult{err: status.Errorf(codes.Unavailable, "%s: the ring re-forms under generation %d, join again", a.Reason, a.Generation)}
		}
		delete(s.d.reportWaiters, step)
	}
	s.broadcastEvent(&pb.JobEvent{
		Kind:       pb.JobEventKind_JOB_EVENT_KIND_REFORM,
		Generation: a.Generation,
		Rank:       int32(a.LostRank),
		Reason:     a.Reason,
		Step:       int32(a.Step),
	})
}

// finalStatus returns the gRPC error for a call that arrives after the job ended.
func (s *Server) finalStatus() error {
	if s.d.result == nil {
		return status.Errorf(codes.FailedPrecondition, "job %q is done", s.cfg.Job.JobID)
	}
	return status.Error(codes.Aborted, s.d.final.Reason)
}

func (s *Server) handleStopRequest() {
	reason := s.requestedStop()
	if s.d.finished || s.d.stopApplied {
		return
	}
	if s.d.coord.Phase() == PhaseRendezvous {
		s.log.Info("stop requested during rendezvous, ending the job", "reason", reason)
		s.d.stopApplied = true
		s.finishStopped(reason)
		return
	}
	if s.d.coord.AfterLastStep() {
		s.log.Info("stop requested after the last step, the job ends once rank 0 has written the result (after the ring re-formed, during a recovery)", "reason", reason,
			"generation", s.d.coord.Generation())
		return
	}
	s.log.Info("stop requested, the next step decision stops the job", "reason", reason,
		"generation", s.d.coord.Generation(), "step", s.currentStep())
}

// handleJoin applies a node's Join and registers ch for its acceptance.
func (s *Server) handleJoin(join Join, gossipAddr string, ch chan joinResult) {
	if s.d.finished {
		ch <- joinResult{err: s.finalStatus()}
		return
	}
	s.d.joinWaiters[join.NodeID] = append(s.d.joinWaiters[join.NodeID], ch)
	known := s.d.nodes[join.NodeID] != nil
	if !known {
		// Recorded before the step so that the JoinAccepted of the last node finds it.
		s.d.nodes[join.NodeID] = &nodeState{gossipAddr: gossipAddr, rank: -1}
	}
	actions, _ := s.step(join, ch)
	for _, action := range actions {
		if rejected, ok := action.(JoinRejected); ok && rejected.NodeID == join.NodeID && !known {
			delete(s.d.nodes, join.NodeID)
		}
	}
	if !known && s.d.nodes[join.NodeID] != nil && s.d.coord.Phase() == PhaseRendezvous {
		s.log.Info("node waiting for rendezvous", "node", join.NodeID, "addr", join.Address,
			"requested_rank", join.RequestedRank, "generation", s.d.coord.Generation())
	}
	s.reg.coordinator.SetNodesJoined(s.countNodes())
}

// cancelJoin handles a Join call that ended before its result. During rendezvous the
// node's place is freed, unless another Join call of the same node still waits, so
// that a node that gave up does not hold a rank. A retry joins again. During a
// recovery the node counts as lost.
func (s *Server) cancelJoin(nodeID string, ch chan joinResult) {
	if !s.removeJoinWaiter(nodeID, ch) || len(s.d.joinWaiters[nodeID]) > 0 {
		return
	}
	if s.d.finished || s.d.nodes[nodeID] == nil {
		return
	}
	if s.d.coord.Phase() == PhaseRecovering {
		// A node that gave up, or died, before the ring re-formed would hold
		// its rank in the new ring, so it counts as lost.
		s.log.Warn("node stopped waiting for the ring to re-form, freeing its rank", "node", nodeID,
			"generation", s.d.coord.Generation())
		delete(s.d.nodes, nodeID)
		s.step(Dead{NodeID: nodeID}, nil)
		s.reg.coordinator.SetNodesJoined(s.countNodes())
		return
	}
	if s.d.coord.Phase() != PhaseRendezvous {
		return
	}
	s.log.Info("node stopped waiting for rendezvous, freeing its place", "node", nodeID)
	delete(s.d.nodes, nodeID)
	s.step(Leave{NodeID: nodeID}, nil)
	s.reg.coordinator.SetNodesJoined(s.countNodes())
}

// removeJoinWaiter removes ch and reports whether it was still waiting.
func (s *Server) removeJoinWaiter(nodeID string, ch chan joinResult) bool {
	waiters := s.d.joinWaiters[nodeID]
	for i, waiter := range waiters {
		if waiter == ch {
			waiters = append(waiters[:i], waiters[i+1:]...)
			if len(waiters) == 0 {
				delete(s.d.joinWaiters, nodeID)
			} else {
				s.d.joinWaiters[nodeID] = waiters
			}
			return true
		}
	}
	return false
}

func (s *Server) countNodes() int {
	n := 0
	for _, node := range s.d.nodes {
		if !node.left {
			n++
		}
	}
	return n
}

// handleReport applies a rank's report and registers ch for the step's decision.
func (s *Server) handleReport(report StepReport, ch chan reportResult) {
	if decision, ok := s.d.decisions[report.Step]; ok && report.Step <= s.d.coord.LastCompletedStep() {
		// A repeated report of a completed step, sent after a lost reply.
		ch <- reportResult{decision: decision}
		return
	}
	if s.d.finished {
		ch <- reportResult{err: s.finalStatus()}
		return
	}

	s.d.reportWaiters[report.Step] = append(s.d.reportWaiters[report.Step], ch)
	_, err := s.step(report, nil)
	switch {
	case err == nil:
	case errors.Is(err, ErrDuplicateReport):
		// A repeated report of a pending step waits for the step like the first.
	default:
		s.removeReportWaiter(report.Step, ch)
		ch <- reportResult{err: reportStatus(err)}
	}
}

func (s *Server) cancelReport(step int, ch chan reportResult) {
	s.removeReportWaiter(step, ch)
}

func (s *Server) removeReportWaiter(step int, ch chan reportResult) {
	waiters := s.d.reportWaiters[step]
	for i, waiter := range waiters {
		if waiter == ch {
			waiters = append(waiters[:i], waiters[i+1:]...)
			break
		}
	}
	if len(waiters) == 0 {
		delete(s.d.reportWaiters, step)
	} else {
		s.d.reportWaiters[step] = waiters
	}
}

// reportStatus maps an error of Coordinator.Step for a report to a gRPC status.
func reportStatus(err error) error {
	switch {
	case errors.Is(err, ErrWrongPhase):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrStaleGeneration), errors.Is(err, ErrFutureGeneration), errors.Is(err, ErrInvalidReport):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrJobFinished):
		return status.Error(codes.Aborted, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// addWatcher registers a Watch stream of a node that joined.
func (s *Server) addWatcher(w *watcher) error {
	if s.d.nodes[w.nodeID] == nil && !s.d.finished {
		return status.Errorf(codes.NotFound, "node %q has not joined job %q: call Join first", w.nodeID, s.cfg.Job.JobID)
	}
	streams := s.d.watchers[w.nodeID]
	if streams == nil {
		streams = make(map[*watcher]struct{})
		s.d.watchers[w.nodeID] = streams
	}
	streams[w] = struct{}{}
	s.d.openWatchers++
	if node := s.d.nodes[w.nodeID]; node != nil {
		node.watched = true
	}
	if s.d.finished {
		w.events <- s.d.final
	} else if s.d.coord.Phase() == PhaseRecovering {
		// A survivor whose stream broke and came back still has to join again.
		w.events <- &pb.JobEvent{Kind: pb.JobEventKind_JOB_EVENT_KIND_REFORM, Generation: s.d.coord.Generation(), Rank: -1,
			Reason: "the ring re-forms", Step: int32(s.d.coord.LastCompletedStep())}
	}
	return nil
}

// removeWatcher unregisters a Watch stream that ended. A running node whose stream
// broke before it left is lost: its process most likely died.
func (s *Server) removeWatcher(w *watcher, cause error) {
	streams := s.d.watchers[w.nodeID]
	if _, ok := streams[w]; !ok {
		return
	}
	delete(streams, w)
	if len(streams) == 0 {
		delete(s.d.watchers, w.nodeID)
	}
	s.d.openWatchers--

	node := s.d.nodes[w.nodeID]
	phase := s.d.coord.Phase()
	if s.d.finished || node == nil || node.left || phase == PhaseRendezvous {
		return
	}
	s.log.Warn("Watch stream of a running node broke", "node", w.nodeID, "rank", node.rank,
		"generation", s.d.coord.Generation(), "step", s.currentStep(), "err", cause)
	s.d.lossDetail = fmt.Sprintf(" (its Watch stream broke: %v)", cause)
	s.step(Dead{NodeID: w.nodeID}, nil)
	s.d.lossDetail = ""
}

// checkWatches declares lost a node that was accepted into the ring WatchTimeout
// ago and never opened its Watch stream: it died between its join and its
// stream, and the ring would otherwise wait for it until a connect timeout.
func (s *Server) checkWatches(now time.Time) {
	if s.d.finished {
		return
	}
	for id, node := range s.d.nodes {
		if node.watched || node.left || node.acceptedAt.IsZero() || now.Sub(node.acceptedAt) < s.cfg.WatchTimeout {
			continue
		}
		s.log.Warn("node joined but opened no Watch stream, so it counts as lost", "node", id, "rank", node.rank,
			"timeout", s.cfg.WatchTimeout, "generation", s.d.coord.Generation())
		node.left = true
		s.d.lossDetail = fmt.Sprintf(" (it opened no Watch stream within %v of its join)", s.cfg.WatchTimeout)
		s.step(Dead{NodeID: id}, nil)
		s.d.lossDetail = ""
		if s.d.finished {
			return
		}
	}
}

// handleLeave applies a node's Leave call. nodeErr is the node's error, or "".
// restart is set when the node was stopped from outside and may be replaced.
func (s *Server) handleLeave(nodeID, nodeErr string, restart bool) {
	node := s.d.nodes[nodeID]
	if s.d.finished && s.d.result == nil && node != nil && nodeErr != "" {
		// A node that fails after the last step, for example while rank 0
		// writes the final model, fails a job that was done.
		s.log.Error("node failed after the last step", "node", nodeID, "rank", node.rank, "node_error", nodeErr)
		s.d.result = &JobError{Rank: node.rank, Reason: fmt.Sprintf("rank %d (node %q) failed after the last step: %s", node.rank, nodeID, nodeErr)}
		return
	}
	if !s.d.finished && node == nil {
		// The node was lost already (its Watch stream broke first), and the
		// ring re-forms without it. The clean leave of a rank 0 lost after the
		// last step still ends the job, which the state machine decides.
		s.log.Info("lost node left", "node", nodeID, "node_error", nodeErr, "generation", s.d.coord.Generation())
		if nodeErr == "" && !restart {
			s.step(Leave{NodeID: nodeID}, nil)
		}
		return
	}
	if s.d.finished || node == nil {
		if node != nil {
			node.left = true
		}
		if nodeErr != "" {
			s.log.Warn("node left with an error after the job ended", "node", nodeID, "node_error", nodeErr, "generation", s.d.coord.Generation())
		} else {
			s.log.Info("node left", "node", nodeID, "generation", s.d.coord.Generation())
		}
		return
	}
	s.log.Info("node left", "node", nodeID, "rank", node.rank, "node_error", nodeErr, "restart", restart,
		"generation", s.d.coord.Generation(), "step", s.currentStep())
	node.left = true
	if nodeErr != "" {
		s.d.lossDetail = ": node error: " + nodeErr
	}
	s.step(Leave{NodeID: nodeID, Restart: restart, Failed: nodeErr != ""}, nil)
	s.d.lossDetail = ""
	if s.d.coord.Phase() == PhaseRendezvous {
		s.dropWaitingNode(nodeID, "left")
	}
	s.reg.coordinator.SetNodesJoined(s.countNodes())
}

// dropWaitingNode removes a node that left during rendezvous and fails its Join
// calls that still wait, because the state machine freed its place.
func (s *Server) dropWaitingNode(nodeID, cause string) {
	delete(s.d.nodes, nodeID)
	for _, ch := range s.d.joinWaiters[nodeID] {
		ch <- joinResult{err: status.Errorf(codes.Aborted, "node %q %s during rendezvous: join again", nodeID, cause)}
	}
	delete(s.d.joinWaiters, nodeID)
}

// handleMemberLost applies a gossip leave or death of the member named name.
func (s *Server) handleMemberLost(name string, dead bool) {
	node := s.d.nodes[name]
	if s.d.finished && node != nil && !node.left {
		// The node's Watch stream no longer holds up the shutdown. A process
		// that hangs after the job ended holds it open, and its launcher may
		// end it.
		node.left = true
		if dead && s.cfg.OnRankLost != nil {
			s.log.Warn("node declared dead by gossip after the job ended", "node", name, "rank", node.rank)
			s.cfg.OnRankLost(node.rank, name)
		}
		return
	}
	if s.d.finished || node == nil || (node.left && !dead) {
		return
	}
	if dead && s.d.coord.Phase() == PhaseRecovering && len(s.d.joinWaiters[name]) > 0 {
		// A node whose join call is open is alive as far as this service can
		// tell. After a partition heals, gossip may declare members dead that
		// did not reply to a cut-off member in time.
		s.log.Warn("gossip declared dead a node that is joining the re-formed ring; its open join call wins", "node", name,
			"rank", node.rank, "generation", s.d.coord.Generation())
		return
	}
	if dead {
		s.log.Warn("node declared dead by gossip", "node", name, "rank", node.rank,
			"generation", s.d.coord.Generation(), "step", s.currentStep())
		s.step(Dead{NodeID: name}, nil)
	} else {
		s.log.Info("node left the gossip cluster", "node", name, "rank", node.rank, "generation", s.d.coord.Generation())
		node.left = true
		// After the last step, only a Leave call reports that rank 0 wrote
		// the result, so a node that leaves gossip without one counts as lost.
		s.step(Leave{NodeID: name, Restart: s.d.coord.AfterLastStep()}, nil)
	}
	if s.d.coord.Phase() == PhaseRendezvous {
		s.dropWaitingNode(name, "was lost")
	}
	s.reg.coordinator.SetNodesJoined(s.countNodes())
}
