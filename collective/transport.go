package collective

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// Conn is one end of the link between two neighbouring ranks. The dialling end sends
// DATA and WAITING frames; either end may send ABORT frames.
//
// Send may be called by one goroutine at a time and Recv by one goroutine at a time,
// but a Send and a Recv may run concurrently.
type Conn interface {
	// Send writes f. The transport reads f.Payload until it calls f.release, which may
	// happen after Send returns; the caller must not change the payload before that.
	// Send blocks under flow control and returns an error once the link is closed.
	Send(f *Frame) error
	// Recv reads the next frame into f. f.Data stays valid until f.Release.
	Recv(f *Frame) error
	// Close ends the link. It lets frames already sent reach the peer, waiting at most
	// until ctx is done, then tears the link down and unblocks Recv and any Send.
	// Close must not run concurrently with Send unless ctx is already done, in which
	// case it tears the link down at once.
	Close(ctx context.Context)
}

// Transport opens the links of a ring.
type Transport interface {
	// Dial opens a link to the endpoint at addr. hello is sent as the first frame and
	// Dial returns once the peer has responded with its own HELLO.
	Dial(ctx context.Context, addr string, hello *Frame) (Conn, error)
	// Accept waits for the link whose HELLO has the job, generation and destination
	// rank of want, checks the rest of it and responds with want.
	Accept(ctx context.Context, want *Frame) (Conn, error)
}

// acceptKey identifies the one incoming link a ring member waits for.
type acceptKey struct {
	jobID      string
	generation uint64
	dstRank    uint32
}

// acceptor matches incoming links to the members waiting for them. Both transports
// use it: an incoming link waits here until its member calls Accept.
type acceptor struct {
	mu      sync.Mutex
	waiting map[acceptKey]*pendingAccept
	// newest is the highest generation registered per job, to reject stale peers fast.
	newest map[string]uint64
	// wait bounds how long an incoming link waits for its member to call Accept.
	wait time.Duration
}

type pendingAccept struct {
	want *Frame
	// registered is closed once want is set.
	registered chan struct{}
	// superseded is closed when a member of a newer generation of the same job
	// registers before this slot's member did, so a waiting offer rejects at once.
	superseded chan struct{}
	ready      chan struct{}
	// conn is set, and ready closed, once a matching link arrived.
	conn Conn
}

func newAcceptor(wait time.Duration) *acceptor {
	return &acceptor{waiting: map[acceptKey]*pendingAccept{}, newest: map[string]uint64{}, wait: wait}
}

func keyOf(f *Frame) acceptKey {
	return acceptKey{jobID: f.JobID, generation: f.Generation, dstRank: f.DstRank}
}

func (a *acceptor) slot(k acceptKey) *pendingAccept {
	p := a.waiting[k]
	if p == nil {
		p = &pendingAccept{registered: make(chan struct{}), superseded: make(chan struct{}), ready: make(chan struct{})}
		a.waiting[k] = p
	}
	return p
}

// accept registers want and waits for its link.
func (a *acceptor) accept(ctx context.Context, want *Frame) (Conn, error) {
	k := keyOf(want)
	a.mu.Lock()
	if a.newest[want.JobID] < want.Generation {
		a.newest[want.JobID] = want.Generation
		a.supersede(want.JobID, want.Generation)
	}
	p := a.slot(k)
	if p.want != nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("rank %d of job %q generation %d is already waiting for its left neighbour", want.DstRank, want.JobID, want.Generation)
	}
	p.want = want
	close(p.registered)
	a.mu.Unlock()

	select {
	case <-p.ready:
		return p.conn, nil
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
		select {
		case <-p.ready:
			// The link arrived at the last moment; hand it back so it is closed.
			if p.conn != nil {
				p.conn.Close(context.Background())
			}
		default:
		}
		delete(a.waiting, k)
		return nil, ctx.Err()
	}
}

// supersede wakes the offers that wait for a member of an older generation of job,
// which can no longer register. Called with a.mu held.
func (a *acceptor) supersede(job string, generation uint64) {
	for k, p := range a.waiting {
		if k.jobID == job && k.generation < generation && p.want == nil {
			close(p.superseded)
			delete(a.waiting, k)
		}
	}
}

// offer hands an incoming link with its HELLO to the member waiting for it, waiting up
// to a.wait for that member to register. It returns an error that names the field when
// the HELLO does not fit.
func (a *acceptor) offer(ctx context.Context, hello *Frame, connect func(want *Frame) Conn) error {
	if hello.Kind != pb.FrameKind_FRAME_KIND_HELLO {
		return fmt.Errorf("first frame has kind %v, expected HELLO", hello.Kind)
	}
	switch {
	case hello.WorldSize < 2:
		return fmt.Errorf("hello field world_size is %d, a ring with links has at least 2 ranks", hello.WorldSize)
	case hello.SrcRank >= hello.WorldSize || hello.DstRank >= hello.WorldSize:
		return fmt.Errorf("hello fields src_rank %d and dst_rank %d must be below world_size %d", hello.SrcRank, hello.DstRank, hello.WorldSize)
	case hello.DstRank != (hello.SrcRank+1)%hello.WorldSize:
		return fmt.Errorf("hello field dst_rank is %d, but the right neighbour of rank %d is %d", hello.DstRank, hello.SrcRank, (hello.SrcRank+1)%hello.WorldSize)
	}
	k := keyOf(hello)
	a.mu.Lock()
	if g, ok := a.newest[hello.JobID]; ok && hello.Generation < g {
		a.mu.Unlock()
		return fmt.Errorf("generation %d of job %q is stale: this endpoint serves generation %d", hello.Generation, hello.JobID, g)
	}
	p := a.slot(k)
	a.mu.Unlock()

	timer := time.NewTimer(a.wait)
	defer timer.Stop()
	select {
	case <-p.registered:
	case <-p.superseded:
		a.mu.Lock()
		newest := a.newest[hello.JobID]
		a.mu.Unlock()
		return fmt.Errorf("generation %d of job %q is stale: this endpoint serves generation %d", hello.Generation, hello.JobID, newest)
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		a.mu.Lock()
		if a.waiting[k] == p && p.want == nil {
			delete(a.waiting, k)
		}
		a.mu.Unlock()
		return fmt.Errorf("no rank %d of job %q generation %d joined this endpoint within %v", hello.DstRank, hello.JobID, hello.Generation, a.wait)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-p.ready:
		return fmt.Errorf("rank %d of job %q generation %d already has a left neighbour", hello.DstRank, hello.JobID, hello.Generation)
	default:
	}
	if a.waiting[k] != p {
		return fmt.Errorf("rank %d of job %q generation %d stopped waiting for its left neighbour", hello.DstRank, hello.JobID, hello.Generation)
	}
	if err := checkHello(hello, p.want); err != nil {
		return err
	}
	p.conn = connect(p.want)
	close(p.ready)
	delete(a.waiting, k)
	return nil
}

// checkHello compares an incoming HELLO with the one its receiver expects.
func checkHello(got, want *Frame) error {
	switch {
	case got.JobID != want.JobID:
		return fmt.Errorf("hello field job_id is %q, expected %q", got.JobID, want.JobID)
	case got.Generation != want.Generation:
		return fmt.Errorf("hello field generation is %d, expected %d", got.Generation, want.Generation)
	case got.WorldSize != want.WorldSize:
		return fmt.Errorf("hello field world_size is %d, expected %d", got.WorldSize, want.WorldSize)
	case got.SrcRank != want.SrcRank:
		return fmt.Errorf("hello field src_rank is %d, expected %d (the left neighbour)", got.SrcRank, want.SrcRank)
	case got.DstRank != want.DstRank:
		return fmt.Errorf("hello field dst_rank is %d, expected %d", got.DstRank, want.DstRank)
	case got.DType != want.DType:
		return fmt.Errorf("hello field dtype is %v, expected %v: every rank must use the same wire dtype", got.DType, want.DType)
	case got.ChunkBytes != want.ChunkBytes:
		return fmt.Errorf("hello field chunk_bytes is %d, expected %d: every rank must use the same ChunkBytes", got.ChunkBytes, want.ChunkBytes)
	case got.SmallBytes != want.SmallBytes:
		return fmt.Errorf("hello field small_bytes is %d, expected %d: every rank must use the same SmallBytes", got.SmallBytes, want.SmallBytes)
	}
	return nil
}
