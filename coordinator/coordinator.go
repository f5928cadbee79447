package coordinator

import (
	"fmt"
	"time"
)

// Phase is the stage of a job's life.
type Phase int

const (
	// PhaseRendezvous waits for WorldSize nodes to join.
	PhaseRendezvous Phase = iota
	// PhaseRunning collects step reports until the last step completes.
	PhaseRunning
	// PhaseRecovering waits, after a rank was lost, for the survivors to join
	// again and for a replacement to take the free rank, before the ring
	// re-forms under the next generation.
	PhaseRecovering
	// PhaseFinishing follows the last step when restarts are allowed: the
	// job is done once rank 0 has written the result and left, and a rank
	// lost before that re-forms the ring like a loss during a step.
	PhaseFinishing
	// PhaseDone means the last step completed and, with restarts allowed,
	// rank 0 wrote the result. It is final.
	PhaseDone
	// PhaseFailed means the job ended with an error. It is final.
	PhaseFailed
)

func (p Phase) String() string {
	switch p {
	case PhaseRendezvous:
		return "rendezvous"
	case PhaseRunning:
		return "running"
	case PhaseRecovering:
		return "recovering"
	case PhaseFinishing:
		return "finishing"
	case PhaseDone:
		return "done"
	case PhaseFailed:
		return "failed"
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// firstGeneration is the generation of the ring formed at rendezvous. 0 is left
// unused so that a zero value in a message reads as "not set".
const firstGeneration = 1

// maxStepsAhead bounds how far past the last completed step a report may be, so
// that a faulty node cannot make the coordinator buffer reports for every step.
// Ranks advance in lockstep because every step ends with an all-reduce, so reports
// more than one step ahead arrive only when another rank's report is delayed.
// NOTE: 16 is a guess at the worst delivery delay in steps, not a measured value.
const maxStepsAhead = 16

// member is a node that joined and has not left.
type member struct {
	join Join
	// rank is the assigned rank, or -1 during rendezvous for a node that requested
	// none.
	rank int
	// joined is set once the node joined the current generation. After a loss,
	// survivors stay members with their ranks but must join again.
	joined bool
}

// Coordinator is the state machine of one job. It is not safe for concurrent use: the
// driver calls Step from one goroutine.
type Coordinator struct {
	cfg      Config
	deadline time.Time
	phase    Phase
	// generation is the current ring generation. Every action carries it, and step
	// reports of other generations are dropped.
	generation uint64

	// members contains every node that joined and has not left, keyed by node id.
	members map[string]*member
	// joinOrder lists the node ids of members in the order they joined. Nodes without
	// a requested rank take the free ranks in this order.
	joinOrder []string

	// ring holds the address of every rank, indexed by rank. It is nil until the
	// job is running.
	ring []string
	// rankNodes holds the node id of every rank, indexed by rank. It is nil until the
	// job is running.
	rankNodes []string

	// lastCompletedStep is the last step for which every rank reported, 0 before
	// the first.
	lastCompletedStep int
	// pendingReports contains the reports of steps after lastCompletedStep, keyed by
	// step. Each slice is indexed by rank, with nil for ranks that have not reported.
	pendingReports map[int][]*StepReport

	// startStep is the step the current generation started after.
	startStep int
	// sourceRank and sourceState are the rank whose state every rank takes
	// after a re-formed ring, and its trainer state; -1 and "" in the first
	// generation.
	sourceRank  int
	sourceState string
	// restarts counts the ring re-formations so far.
	restarts int
	// recoveryDeadline is when recovery fails unless every rank joined; zero
	// until the first Tick of the recovery.
	recoveryDeadline time.Time
	// lost describes the losses that started the recovery, for its failure.
	lost []string
	// finishDeadline is when the finishing phase fails unless rank 0 left
	// cleanly; zero until the first Tick of the phase.
	finishDeadline time.Time
	// lostRankZero is the node id of a rank 0 lost after the last step, whose
	// clean leave still means that it wrote the result.
	lostRankZero string
}

// New returns a coordinator in rendezvous whose join deadline is start plus
// cfg.JoinTimeout.
func New(cfg Config, start time.Time) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.FinishTimeout == 0 {
		cfg.FinishTimeout = DefaultFinishTimeout
	}
	return &Coordinator{
		cfg:        cfg,
		deadline:   start.Add(cfg.JoinTimeout),
		phase:      PhaseRendezvous,
		generation: firstGeneration,
		// A resumed job continues after its checkpoint's step.
		lastCompletedStep: cfg.StartStep,
		startStep:         cfg.StartStep,
		sourceRank:        -1,
		members:           make(map[string]*member),
		pendingReports:    make(map[int][]*StepReport),
	}, nil
}

// Phase returns the job's current phase.
func (c *Coordinator) Phase() Phase { return c.phase }

// Generation returns the current ring generation.
func (c *Coordinator) Generation() uint64 { return c.generation }

// JoinDeadline returns the time at which rendezvous fails unless all nodes joined.
func (c *Coordinator) JoinDeadline() time.Time { return c.deadline }

// AfterLastStep reports whether every rank completed the job's last step.
func (c *Coordinator) AfterLastStep() bool { return c.lastCompletedStep == c.cfg.TotalSteps }

// LastCompletedStep returns the last step for which every rank reported, or 0.
func (c *Coordinator) LastCompletedStep() int { return c.lastCompletedStep }

// Step applies one event and returns the actions the driver must perform, in order.
// A non-nil error means the event was dropped without changing state; it wraps one
// of the package's sentinel errors. Step never returns both actions and an error.
func (c *Coordinator) Step(event Event) ([]Action, error) {
	switch e := event.(type) {
	case Join:
		return c.handleJoin(e), nil
	case Leave:
		switch {
		case e.Restart:
			return c.handleMemberLost(e.NodeID, "left to be replaced", lossRestartable)
		case e.Failed:
			return c.handleMemberLost(e.NodeID, "failed", lossFailed)
		}
		return c.handleMemberLost(e.NodeID, "left the job", lossClean)
	case Dead:
		return c.handleMemberLost(e.NodeID, "was declared dead", lossRestartable)
	case StepReport:
		return c.handleStepReport(e)
	case Tick:
		return c.handleTick(e), nil
	}
	return nil, fmt.Errorf("%w: %T", ErrUnknownEvent, event)
}

func (c *Coordinator) finished() bool {
	return c.phase == PhaseDone || c.phase == PhaseFailed
}

func (c *Coordinator) handleTick(tick Tick) []Action {
	if c.phase == PhaseRecovering {
		return c.recoveryTick(tick)
	}
	if c.phase == PhaseFinishing {
		return c.finishTick(tick)
	}
	if c.phase != PhaseRendezvous || tick.Now.Before(c.deadline) {
		return nil
	}
	reason := fmt.Sprintf("join deadline passed: %d of %d nodes joined within %v",
		len(c.members), c.cfg.WorldSize, c.cfg.JoinTimeout)
	return c.becomeFailed(-1, reason)
}

// lossKind is the way a node left the job.
type lossKind int

const (
	// lossClean is a Leave after the node's work ended.
	lossClean lossKind = iota
	// lossFailed is a Leave with the node's own error.
	lossFailed
	// lossRestartable is a node that died or was stopped from outside, which
	// a replacement may take over.
	lossRestartable
)

// handleMemberLost handles a Leave or Dead event. During rendezvous the node's place
// is freed for another node. Once running, a lost rank starts a recovery when it may
// come back (restartable) and restarts are left, and fails the job otherwise.
func (c *Coordinator) handleMemberLost(nodeID, cause string, kind lossKind) ([]Action, error) {
	if c.finished() {
		return nil, fmt.Errorf("%w: node %q %s after the job became %v", ErrJobFinished, nodeID, cause, c.phase)
	}
	m, ok := c.members[nodeID]
	if !ok && kind == lossClean && nodeID == c.lostRankZero && c.AfterLastStep() {
		// Rank 0 was declared lost after the last step, yet wrote the
		// result: a stalled coordinator or a short cut can cause that.
		return c.becomeDone(), nil
	}
	if !ok {
		return nil, fmt.Errorf("%w: node %q %s but never joined", ErrUnknownNode, nodeID, cause)
	}

	if c.phase == PhaseRendezvous {
		c.removeMember(nodeID)
		return nil, nil
	}

	if c.AfterLastStep() {
		return c.lostAfterLastStep(m, cause, kind), nil
	}
	reason := fmt.Sprintf("rank %d (node %q at %s) %s during step %d of %d",
		m.rank, nodeID, m.join.Address, cause, c.lastCompletedStep+1, c.cfg.TotalSteps)
	if kind != lossRestartable {
		return c.becomeFailed(m.rank, reason), nil
	}
	return c.recover(m, reason), nil
}

// lostAfterLastStep handles a node that left while the job finishes, or
// while the ring re-forms after the last step. Rank 0's clean leave means
// the result is written, so the job is done. A lost rank re-forms the ring,
// because rank 0 may still need the others for the final evaluation and a
// replacement of rank 0 takes a survivor's state to write the result. Past
// max_restarts, a lost rank fails the job, as during a step.
func (c *Coordinator) lostAfterLastStep(m *member, cause string, kind lossKind) []Action {
	reason := fmt.Sprintf("rank %d (node %q at %s) %s after the last step (%d), before rank 0 reported the result written",
		m.rank, m.join.NodeID, m.join.Address, cause, c.cfg.TotalSteps)
	switch {
	case kind == lossClean && m.rank == 0:
		return c.becomeDone()
	case kind == lossClean:
		// A rank other than 0 has nothing left to do.
		return nil
	case kind == lossFailed:
		return c.becomeFailed(m.rank, reason)
	}
	if m.rank == 0 {
		c.lostRankZero = m.join.NodeID
	}
	return c.recover(m, reason)
}

// afterLastStep ends the job once every rank completed the last step, or,
// when restarts are allowed, waits for rank 0 to write the result.
func (c *Coordinator) afterLastStep() []Action {
	if c.cfg.MaxRestarts == 0 {
		return c.becomeDone()
	}
	c.phase = PhaseFinishing
	c.pendingReports = nil
	c.finishDeadline = time.Time{} // set by the next Tick
	return []Action{Finish{Generation: c.generation, Step: c.lastCompletedStep}}
}

// finishTick fails the finishing phase once the finish timeout passed since
// its first Tick: rank 0 is alive as far as the failure detectors tell, but
// does not end its write of the result.
func (c *Coordinator) finishTick(tick Tick) []Action {
	if !expired(&c.finishDeadline, tick.Now, c.cfg.FinishTimeout) {
		return nil
	}
	reason := fmt.Sprintf("rank 0 (node %q) did not write the result and leave within %v of the last step", c.rankNodes[0], c.cfg.FinishTimeout)
	return c.becomeFailed(0, reason)
}

// expired reports whether timeout passed since the first call for deadline,
// which sets deadline; a zero deadline starts a new wait.
func expired(deadline *time.Time, now time.Time, timeout time.Duration) bool {
	if deadline.IsZero() {
		*deadline = now.Add(timeout)
		return false
	}
	return !now.Before(*deadline)
}

func (c *Coordinator) removeMember(nodeID string) {
	delete(c.members, nodeID)
	for i, id := range c.joinOrder {
		if id == nodeID {
			c.joinOrder = append(c.joinOrder[:i], c.joinOrder[i+1:]...)
			break
		}
	}
}

func (c *Coordinator) becomeFailed(rank int, reason string) []Action {
	c.phase = PhaseFailed
	c.pendingReports = nil
	return []Action{FailJob{Generation: c.generation, Rank: rank, Reason: reason}}
}

func (c *Coordinator) becomeDone() []Action {
	c.phase = PhaseDone
	c.pendingReports = nil
	return []Action{Done{Generation: c.generation, Step: c.lastCompletedStep}}
}
