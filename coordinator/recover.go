package coordinator

import (
	"fmt"
	"strings"
	"time"
)

// recover starts, or extends, the re-formation of the ring after m was lost.
//
// The lost rank's place is freed. The survivors keep their ranks and join again
// under the next generation, each with the state of the last step it completed.
// A new node takes the free rank. Once all WorldSize ranks joined, the ring forms
// again and every rank takes the state of the survivor that completed the most
// steps, which is the last step all survivors completed or one step more.
func (c *Coordinator) recover(m *member, reason string) []Action {
	nodeID := m.join.NodeID
	if c.phase == PhaseRecovering {
		// Another loss before the ring re-formed. The survivors have the REFORM
		// event already and join the same generation.
		c.removeMember(nodeID)
		c.lost = append(c.lost, reason)
		return nil
	}
	if c.restarts >= c.cfg.MaxRestarts {
		if c.cfg.MaxRestarts > 0 {
			reason += fmt.Sprintf(", and the ring already re-formed as often as max_restarts (%d) allows", c.cfg.MaxRestarts)
		}
		return c.becomeFailed(m.rank, reason)
	}

	c.restarts++
	c.generation++
	c.phase = PhaseRecovering
	c.recoveryDeadline = time.Time{} // set by the next Tick
	c.lost = []string{reason}
	c.pendingReports = make(map[int][]*StepReport)
	c.removeMember(nodeID)
	for _, other := range c.members {
		other.joined = false
		other.join.State = NodeState{}
	}
	return []Action{Reform{
		Generation: c.generation, LostNodeID: nodeID, LostRank: m.rank, Reason: reason, Step: c.lastCompletedStep,
	}}
}

// recoveryTick fails the recovery once JoinTimeout passed since its first Tick.
func (c *Coordinator) recoveryTick(tick Tick) []Action {
	if !expired(&c.recoveryDeadline, tick.Now, c.cfg.JoinTimeout) {
		return nil
	}
	joined := 0
	for _, m := range c.members {
		if m.joined {
			joined++
		}
	}
	reason := fmt.Sprintf("%s; the ring could not re-form: %d of %d nodes joined generation %d within %v",
		strings.Join(c.lost, "; "), joined, c.cfg.WorldSize, c.generation, c.cfg.JoinTimeout)
	return c.becomeFailed(-1, reason)
}

// handleRejoin admits a survivor that joins again during recovery, with the
// state it holds.
func (c *Coordinator) handleRejoin(existing *member, join Join) []Action {
	if !sameNode(existing.join, join) {
		reason := fmt.Sprintf("node id %q already joined with address %s and requested rank %d; node ids must be unique",
			join.NodeID, existing.join.Address, existing.join.RequestedRank)
		return []Action{JoinRejected{NodeID: join.NodeID, Generation: c.generation, Reason: reason}}
	}
	if reason := c.checkState(join); reason != "" {
		return []Action{JoinRejected{NodeID: join.NodeID, Generation: c.generation, Reason: reason}}
	}
	existing.join = join
	existing.joined = true
	return c.maybeReform()
}

// sameNode reports whether two joins come from the same node, whatever state
// each carries.
func sameNode(a, b Join) bool {
	a.State, b.State = NodeState{}, NodeState{}
	return a == b
}

// checkState returns why the state a node holds cannot be the job's, or "".
// Ranks advance in lockstep, so a node holds the last step every rank
// completed, or the step after it when its all-reduce of that step ended
// before the loss broke the ring elsewhere.
func (c *Coordinator) checkState(join Join) string {
	st := join.State
	if !st.HasState {
		return ""
	}
	if st.CompletedStep < c.lastCompletedStep || st.CompletedStep > c.lastCompletedStep+1 {
		return fmt.Sprintf("node holds the state of step %d, but every rank completed step %d and none can be past step %d",
			st.CompletedStep, c.lastCompletedStep, c.lastCompletedStep+1)
	}
	return ""
}

// maybeReform forms the ring of the next generation once every rank joined.
func (c *Coordinator) maybeReform() []Action {
	var source *member
	for _, id := range c.joinOrder {
		m := c.members[id]
		if !m.joined {
			return nil
		}
		st := m.join.State
		if st.HasState && (source == nil || st.CompletedStep > source.join.State.CompletedStep ||
			(st.CompletedStep == source.join.State.CompletedStep && m.rank < source.rank)) {
			source = m
		}
	}
	if len(c.members) < c.cfg.WorldSize {
		return nil
	}
	if source == nil {
		reason := strings.Join(c.lost, "; ") +
			"; no node that joined again holds the training state, so the ring cannot re-form: resume from the last checkpoint with --resume"
		return c.becomeFailed(-1, reason)
	}

	c.startStep = source.join.State.CompletedStep
	c.lastCompletedStep = c.startStep
	c.sourceRank = source.rank
	c.sourceState = source.join.State.TrainerState
	c.lost = nil
	actions := c.becomeRunning()
	if c.AfterLastStep() {
		// A survivor finished the last step before the loss: once the others
		// took its state, rank 0 writes the result.
		actions = append(actions, c.afterLastStep()...)
	}
	return actions
}
