package coordinator

import "errors"

// Sentinel errors returned by Coordinator.Step for events that it drops without
// changing state. A driver logs them at Debug level (stale reports are routine) or
// Warn level (a node that sends invalid data) and carries on.
var (
	// ErrStaleGeneration: a step report from an older ring generation, sent before
	// the ring was re-formed.
	ErrStaleGeneration = errors.New("report from an old generation")
	// ErrFutureGeneration: a step report from a generation that this coordinator has
	// not issued.
	ErrFutureGeneration = errors.New("report from an unknown future generation")
	// ErrWrongPhase: the event does not apply in the job's current phase, for example
	// a step report during rendezvous.
	ErrWrongPhase = errors.New("event not valid in the current phase")
	// ErrJobFinished: the job is done or failed, so the event has no effect.
	ErrJobFinished = errors.New("job already finished")
	// ErrUnknownNode: a leave or dead event names a node that is not a member.
	ErrUnknownNode = errors.New("unknown node")
	// ErrInvalidReport: a step report has a rank, step or value out of range.
	ErrInvalidReport = errors.New("invalid step report")
	// ErrDuplicateReport: a rank reported the same step twice.
	ErrDuplicateReport = errors.New("duplicate step report")
	// ErrUnknownEvent: Step received an Event type that it does not handle.
	ErrUnknownEvent = errors.New("unknown event type")
)
