package coordinator

import "fmt"

// handleJoin admits a node or rejects it with a reason.
//
// A repeated Join with the same node id and identical fields is a retry of the same
// node (for example after a dropped connection), so it is accepted again
// idempotently: during rendezvous it changes nothing, and once running it repeats the
// node's JoinAccepted. A repeated node id with any other field changed is rejected,
// because two processes would then share one identity. After the job is done or
// failed, every join is rejected.
func (c *Coordinator) handleJoin(join Join) []Action {
	if existing, ok := c.members[join.NodeID]; ok && !c.finished() {
		if c.phase == PhaseRecovering && !existing.joined {
			return c.handleRejoin(existing, join)
		}
		return c.handleRepeatedJoin(existing, join)
	}
	if reason := c.checkJoin(join); reason != "" {
		return []Action{JoinRejected{NodeID: join.NodeID, Generation: c.generation, Reason: reason}}
	}

	c.members[join.NodeID] = &member{join: join, rank: join.RequestedRank, joined: true}
	c.joinOrder = append(c.joinOrder, join.NodeID)
	if c.phase == PhaseRecovering {
		return c.maybeReform()
	}
	if len(c.members) < c.cfg.WorldSize {
		return nil
	}
	actions := c.becomeRunning()
	if c.AfterLastStep() {
		// Resumed from a checkpoint of the last step: nothing is left to train.
		actions = append(actions, c.afterLastStep()...)
	}
	return actions
}

func (c *Coordinator) handleRepeatedJoin(existing *member, join Join) []Action {
	if !sameNode(existing.join, join) {
		reason := fmt.Sprintf("node id %q already joined with address %s, requested rank %d and another fingerprint or job id; node ids must be unique",
			join.NodeID, existing.join.Address, existing.join.RequestedRank)
		if existing.join.Address != join.Address || existing.join.RequestedRank != join.RequestedRank {
			reason = fmt.Sprintf("node id %q already joined with address %s and requested rank %d; node ids must be unique",
				join.NodeID, existing.join.Address, existing.join.RequestedRank)
		}
		return []Action{JoinRejected{NodeID: join.NodeID, Generation: c.generation, Reason: reason}}
	}
	if c.phase == PhaseRunning || c.phase == PhaseFinishing {
		return []Action{c.acceptance(existing.rank)}
	}
	// A retry during rendezvous or recovery gets its JoinAccepted when the ring forms.
	return nil
}

// checkJoin returns why a new node may not join, or "" when it may.
func (c *Coordinator) checkJoin(join Join) string {
	switch c.phase {
	case PhaseRunning:
		return fmt.Sprintf("job %q is already running with all %d ranks assigned; to replace a lost node, start the replacement again once the coordinator has declared that node lost",
			c.cfg.JobID, c.cfg.WorldSize)
	case PhaseFinishing:
		return fmt.Sprintf("job %q completed its last step and waits for rank 0 to write the result", c.cfg.JobID)
	case PhaseDone:
		return fmt.Sprintf("job %q has finished and accepts no nodes", c.cfg.JobID)
	case PhaseFailed:
		return fmt.Sprintf("job %q has failed and accepts no nodes", c.cfg.JobID)
	}

	if c.phase == PhaseRecovering && len(c.members) >= c.cfg.WorldSize {
		return fmt.Sprintf("job %q is re-forming its ring with all %d ranks assigned", c.cfg.JobID, c.cfg.WorldSize)
	}
	if join.NodeID == "" {
		return "node id is missing"
	}
	if join.Address == "" {
		return "address is missing"
	}
	if join.JobID != c.cfg.JobID {
		return fmt.Sprintf("job id differs: node has %q, job has %q", join.JobID, c.cfg.JobID)
	}
	for _, field := range join.Fingerprint.fields(c.cfg.Fingerprint) {
		if field.node != field.job {
			return fmt.Sprintf("%s differs: node has %s, job has %s: %s", field.name, field.node, field.job, field.hint)
		}
	}

	if join.RequestedRank != -1 {
		if join.RequestedRank < 0 || join.RequestedRank >= c.cfg.WorldSize {
			return fmt.Sprintf("requested rank %d is out of range: the job has ranks 0 to %d (or request -1 for any rank)",
				join.RequestedRank, c.cfg.WorldSize-1)
		}
		for _, id := range c.joinOrder {
			if c.members[id].rank == join.RequestedRank {
				return fmt.Sprintf("requested rank %d is already taken by node %q", join.RequestedRank, id)
			}
		}
	}
	for _, id := range c.joinOrder {
		if c.members[id].join.Address == join.Address {
			return fmt.Sprintf("address %s is already used by node %q", join.Address, id)
		}
	}
	return c.checkState(join)
}

// becomeRunning assigns ranks, forms the ring and accepts every node. Requested ranks
// were checked to be free and in range at join time, and survivors of a lost rank keep
// theirs. The other nodes take the lowest free ranks in join order, so their ranks are
// known only once all nodes joined.
func (c *Coordinator) becomeRunning() []Action {
	c.rankNodes = make([]string, c.cfg.WorldSize)
	rankTaken := make([]bool, c.cfg.WorldSize)
	for _, id := range c.joinOrder {
		if rank := c.members[id].rank; rank >= 0 {
			c.rankNodes[rank] = id
			rankTaken[rank] = true
		}
	}
	nextFree := 0
	for _, id := range c.joinOrder {
		m := c.members[id]
		if m.rank >= 0 {
			continue
		}
		for rankTaken[nextFree] {
			nextFree++
		}
		m.rank = nextFree
		c.rankNodes[nextFree] = id
		rankTaken[nextFree] = true
	}

	c.ring = make([]string, c.cfg.WorldSize)
	for rank, id := range c.rankNodes {
		c.ring[rank] = c.members[id].join.Address
	}
	c.phase = PhaseRunning

	actions := make([]Action, 0, c.cfg.WorldSize)
	for rank := range c.rankNodes {
		actions = append(actions, c.acceptance(rank))
	}
	return actions
}

func (c *Coordinator) acceptance(rank int) JoinAccepted {
	return JoinAccepted{
		NodeID:     c.rankNodes[rank],
		Rank:       rank,
		WorldSize:  c.cfg.WorldSize,
		Generation: c.generation,
		Ring:       c.ring,
		// NOTE: the epoch is always 0 because the coordinator does not yet know the
		// number of steps per epoch; a node advances epochs itself.
		Shard:        ShardPlan{Seed: c.cfg.Seed, Epoch: 0, WorldSize: c.cfg.WorldSize},
		StartStep:    c.startStep,
		SourceRank:   c.sourceRank,
		TrainerState: c.sourceState,
	}
}
