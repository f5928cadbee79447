package collective

import (
	"errors"
	"fmt"
)

// Sentinel errors that callers act on. Errors returned by a Communicator wrap one of
// these where it applies, so errors.Is works on them.
var (
	// ErrPeerLost: a neighbour's stream broke or its process went away.
	ErrPeerLost = errors.New("peer lost")
	// ErrPeerStalled: a neighbour stayed connected but sent no data for the
	// no-progress timeout.
	ErrPeerStalled = errors.New("peer stalled")
	// ErrAborted: another rank gave up on the ring and sent this one an ABORT frame.
	ErrAborted = errors.New("ring aborted")
	// ErrClosed: the Communicator was closed.
	ErrClosed = errors.New("communicator closed")
	// ErrProtocol: a peer sent a frame that does not fit the operation in progress.
	ErrProtocol = errors.New("protocol error")
	// ErrRejected: a peer refused the link (token, job, generation, rank or size).
	ErrRejected = errors.New("link rejected")
	// ErrEndpointClosed: this rank's own transport endpoint was closed under a live ring.
	ErrEndpointClosed = errors.New("endpoint closed")
)

// FaultError reports a failure of the ring and the rank found at fault.
type FaultError struct {
	// Rank is the rank at fault, or -1 when unknown.
	Rank int
	// Addr is the address of that rank when known.
	Addr string
	// ReportedBy is the rank that detected the fault; it differs from the local rank
	// when the fault reached this rank in an ABORT frame.
	ReportedBy int
	// Kind is one of the sentinel errors above.
	Kind error
	// Detail is the underlying error text.
	Detail string
}

func (e *FaultError) Error() string {
	at := "an unknown rank"
	if e.Rank >= 0 {
		at = fmt.Sprintf("rank %d", e.Rank)
		if e.Addr != "" {
			at += " (" + e.Addr + ")"
		}
	}
	return fmt.Sprintf("%v: %s, detected by rank %d: %s", e.Kind, at, e.ReportedBy, e.Detail)
}

// Is makes errors.Is(err, ErrPeerLost) and its siblings work.
func (e *FaultError) Is(target error) bool { return target == e.Kind }
