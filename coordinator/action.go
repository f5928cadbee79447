package coordinator

import "time"

// Action is an output of Coordinator.Step that the driver performs. Every action
// carries the ring generation it belongs to. The concrete types are JoinAccepted,
// JoinRejected, FailJob, Reform, Checkpoint, StepSummary, Finish and Done.
type Action interface {
	// ActionGeneration returns the ring generation the action belongs to.
	ActionGeneration() uint64
}

// ShardPlan is the input from which a node computes its share of the data for an
// epoch. The node shuffles the example indices with a permutation seeded by Seed and
// Epoch, then takes the part for its rank out of WorldSize equal parts.
type ShardPlan struct {
	Seed      uint64
	Epoch     int
	WorldSize int
}

// JoinAccepted is the reply to one admitted node, with its place in the ring. The coordinator emits one per
// node, in rank order, once all WorldSize nodes have joined.
type JoinAccepted struct {
	NodeID     string
	Rank       int
	WorldSize  int
	Generation uint64
	// Ring holds the address of every rank, indexed by rank. It is the same slice
	// for every node of a generation and must not be modified.
	Ring  []string
	Shard ShardPlan
	// StartStep is the last step completed before this generation; the first
	// report is for StartStep+1.
	StartStep int
	// SourceRank is the rank whose weights and optimizer state every rank takes
	// by broadcast before training, with TrainerState, after a re-formed ring;
	// -1 in the first generation, where each rank loads its state itself.
	SourceRank   int
	TrainerState string
}

// JoinRejected is the reply to a node that may not join, with the reason.
type JoinRejected struct {
	NodeID     string
	Generation uint64
	// Reason names the offending field and both values, for example
	// "dataset hash differs: node has X, job has Y".
	Reason string
}

// FailJob ends the job with an error. The driver stops every node.
type FailJob struct {
	Generation uint64
	// Rank is the lost rank when a node loss caused the failure, or -1.
	Rank   int
	Reason string
}

// Checkpoint is a request to rank 0 to write a checkpoint of the state after Step.
type Checkpoint struct {
	Generation uint64
	Step       int
}

// StepSummary aggregates the reports of all ranks for one step.
type StepSummary struct {
	Generation uint64
	Step       int
	// MeanLoss is the mean of the ranks' losses weighted by their token counts, which
	// is the mean loss per target token over the global batch. When no rank counted a
	// token, it is the plain mean of the losses.
	MeanLoss float64
	// Tokens is the sum of the ranks' token counts.
	Tokens int64
	// TokensPerSecond is Tokens divided by the step's wall time, estimated as the
	// maximum over ranks of ComputeTime + ExposedAllReduceTime. It is 0 when that
	// estimate is 0.
	TokensPerSecond float64
	// BytesSent is the sum of the ranks' bytes sent.
	BytesSent int64
	// The maxima over ranks of the reported times and memory.
	MaxComputeTime          time.Duration
	MaxAllReduceTime        time.Duration
	MaxExposedAllReduceTime time.Duration
	MaxPeakMemory           int64
	// LR is rank 0's learning rate of the step; every rank follows the same schedule.
	LR float64
}

// Reform announces that a rank was lost and the ring re-forms under
// Generation: every node abandons its step and joins again.
type Reform struct {
	Generation uint64
	// LostNodeID and LostRank name the lost node.
	LostNodeID string
	LostRank   int
	Reason     string
	// Step is the last step every rank completed.
	Step int
}

// Finish reports that the last step completed and the job waits for rank 0
// to write the result and leave. The driver marks the step's decision as the
// last.
type Finish struct {
	Generation uint64
	Step       int
}

// Done reports that the last step completed. The driver stops every node.
type Done struct {
	Generation uint64
	Step       int
}

func (a JoinAccepted) ActionGeneration() uint64 { return a.Generation }
func (a JoinRejected) ActionGeneration() uint64 { return a.Generation }
func (a FailJob) ActionGeneration() uint64      { return a.Generation }
func (a Checkpoint) ActionGeneration() uint64   { return a.Generation }
func (a StepSummary) ActionGeneration() uint64  { return a.Generation }
func (a Done) ActionGeneration() uint64         { return a.Generation }
func (a Finish) ActionGeneration() uint64       { return a.Generation }
func (a Reform) ActionGeneration() uint64       { return a.Generation }
