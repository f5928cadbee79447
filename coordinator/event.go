package coordinator

import "time"

// Event is an input to Coordinator.Step. The concrete types are Join, Leave, Dead,
// StepReport and Tick.
type Event interface {
	isEvent()
}

// Join is a node's request to join the job.
type Join struct {
	// NodeID identifies the node for its whole life. It must be unique in the job.
	NodeID string
	// Address is the host:port of the node's collective service. Its left neighbour
	// in the ring dials it.
	Address string
	// JobID is the job the node was started for.
	JobID string
	// RequestedRank is the rank the node requests, or -1 for any free rank.
	RequestedRank int
	// Fingerprint identifies the binary, configuration, model and data of the node.
	Fingerprint Fingerprint
	// State is the training state the node holds, set by a survivor that joins
	// again after a lost rank.
	State NodeState
}

// NodeState is the training state a node holds after a completed step.
type NodeState struct {
	// HasState is set when the node has a completed step's weights and optimizer
	// state in memory.
	HasState bool
	// CompletedStep is the last step the node completed.
	CompletedStep int
	// TrainerState is the node's trainer state after CompletedStep, as JSON
	// that the coordinator passes on without reading.
	TrainerState string
}

// Leave reports that a node left the job on purpose.
type Leave struct {
	NodeID string
	// Restart is set when the node was stopped from outside and may be
	// replaced, so that its loss starts a recovery rather than failing the job.
	Restart bool
	// Failed is set when the node left with its own error.
	Failed bool
}

// Dead reports that the membership layer declared a node dead.
type Dead struct {
	NodeID string
}

// StepReport is one rank's account of one completed optimizer step.
type StepReport struct {
	// Rank is the reporting rank.
	Rank int
	// Generation is the ring generation the step ran under.
	Generation uint64
	// Step is the completed step, from 1 to Config.TotalSteps.
	Step int
	// Loss is the rank's mean loss per target token for the step.
	Loss float64
	// Tokens is the number of target tokens the rank's loss is averaged over.
	Tokens int64
	// BytesSent is the number of bytes the rank sent in the step's all-reduces.
	BytesSent int64
	// ComputeTime is the time spent in forward and backward.
	ComputeTime time.Duration
	// AllReduceTime is the total time the all-reduces ran, overlapped or not.
	AllReduceTime time.Duration
	// ExposedAllReduceTime is the part of AllReduceTime that compute did not hide:
	// the time the step waited for buckets after backward ended.
	ExposedAllReduceTime time.Duration
	// PeakMemory is the rank's peak accelerator or heap memory in bytes.
	PeakMemory int64
	// LR is the learning rate of the step's update.
	LR float64
}

// Tick carries the current time, so that the coordinator can act on deadlines without
// reading a clock. A driver sends one every second or so.
type Tick struct {
	Now time.Time
}

func (Join) isEvent()       {}
func (Leave) isEvent()      {}
func (Dead) isEvent()       {}
func (StepReport) isEvent() {}
func (Tick) isEvent()       {}
