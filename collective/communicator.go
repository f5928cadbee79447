package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// Communicator is one member of a ring of N ranks. Every rank must issue the same
// collective calls in the same order with buffers of the same length. Calls may
// overlap through the asynchronous forms, which is how gradient buckets are reduced
// while backward still runs.
//
// A failure of any rank fails every operation in flight on every survivor and leaves
// the Communicator unusable. Close it and form a new ring with a higher Generation.
type Communicator struct {
	cfg       Config
	rank      int
	size      int
	leftRank  int
	rightRank int
	log       *slog.Logger

	// left receives DATA and WAITING frames from rank-1; right sends them to rank+1.
	// Both are nil when size is 1.
	left  Conn
	right Conn
	// sendMu serializes Send on right; leftSendMu serializes Send on left.
	sendMu     sync.Mutex
	leftSendMu sync.Mutex

	mu sync.Mutex
	// issued is the id of the last operation this rank started; guarded by mu.
	issued uint64
	// ops holds live operations and operations whose first frames arrived before
	// this rank started them; guarded by mu.
	ops map[uint64]*opState

	failOnce sync.Once
	// failed is closed after failErr is set.
	failed  chan struct{}
	failErr *FaultError
	// leftClosed is closed when the left neighbour closed its end of the link in an
	// orderly way: every frame it sent has been dispatched.
	leftClosed chan struct{}
	// rightDone is closed when rightLoop has read the link back from the right
	// neighbour to its end.
	rightDone chan struct{}

	// lastData and lastWaiting hold the unix time in nanoseconds of the last DATA and
	// WAITING frames from the left neighbour.
	lastData    atomic.Int64
	lastWaiting atomic.Int64
	// rightErr holds the error that ended the stream back from the right neighbour,
	// for the message of a later failed send.
	rightErr atomic.Value
	// waitingNotice wakes the goroutine that sends WAITING frames to the right.
	waitingNotice chan uint64

	totals    counters
	stagePool sync.Pool // *stagingBuf, for bf16 payloads
	opPool    sync.Pool // *opState

	loops     sync.WaitGroup
	closeOnce sync.Once
}

// maxOpsAhead bounds how many operations the left neighbour may start before this
// rank does; frames of operations further ahead are a protocol error.
const maxOpsAhead = 4096

// New forms this rank's part of the ring: it dials the right neighbour and accepts the
// left one through tr, both within cfg.ConnectTimeout or until ctx is done.
func New(ctx context.Context, cfg Config, tr Transport) (*Communicator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Communicator{
		cfg:           cfg,
		rank:          cfg.Rank,
		size:          cfg.WorldSize,
		leftRank:      (cfg.Rank + cfg.WorldSize - 1) % cfg.WorldSize,
		rightRank:     (cfg.Rank + 1) % cfg.WorldSize,
		ops:           map[uint64]*opState{},
		failed:        make(chan struct{}),
		leftClosed:    make(chan struct{}),
		rightDone:     make(chan struct{}),
		waitingNotice: make(chan uint64, 1),
	}
	c.log = cfg.Logger.With("rank", cfg.Rank, "world_size", cfg.WorldSize, "generation", cfg.Generation)
	if c.size == 1 {
		return c, nil
	}
	if tr == nil {
		return nil, errors.New("collective: a Transport is required when WorldSize > 1")
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	hello := func(src, dst int) *Frame {
		return &Frame{
			Kind: pb.FrameKind_FRAME_KIND_HELLO, JobID: cfg.JobID, Generation: cfg.Generation,
			SrcRank: uint32(src), DstRank: uint32(dst), WorldSize: uint32(cfg.WorldSize),
			FaultRank: -1, Message: cfg.peerAddr(src),
			DType: wireType(cfg.DType), ChunkBytes: uint32(cfg.ChunkBytes), SmallBytes: int32(max(cfg.SmallBytes, -1)),
		}
	}
	var wg sync.WaitGroup
	var dialErr, acceptErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.right, dialErr = tr.Dial(ctx, cfg.peerAddr(c.rightRank), hello(c.rank, c.rightRank))
		if dialErr != nil {
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		c.left, acceptErr = tr.Accept(ctx, hello(c.leftRank, c.rank))
		if acceptErr != nil {
			cancel()
		}
	}()
	wg.Wait()
	if dialErr != nil || acceptErr != nil {
		// Nothing reads the links yet, so there is nothing to wait for.
		closeCtx, done := context.WithCancel(context.Background())
		done()
		if c.right != nil {
			c.right.Close(closeCtx)
		}
		if c.left != nil {
			c.left.Close(closeCtx)
		}
		hint := ""
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			hint = fmt.Sprintf(" (no link within ConnectTimeout %v: check that every rank is running, reachable and started with the same job token)", cfg.ConnectTimeout)
		}
		if dialErr != nil {
			return nil, fmt.Errorf("collective: rank %d: connect to right neighbour rank %d at %s: %w%s",
				c.rank, c.rightRank, cfg.peerAddr(c.rightRank), dialErr, hint)
		}
		return nil, fmt.Errorf("collective: rank %d: wait for left neighbour rank %d (%s): %w%s",
			c.rank, c.leftRank, cfg.peerAddr(c.leftRank), acceptErr, hint)
	}

	now := time.Now().UnixNano()
	c.lastData.Store(now)
	c.loops.Add(3)
	go c.leftLoop()
	go c.rightLoop()
	go c.waitingLoop()
	c.log.Info("ring formed", "left", c.leftRank, "right", c.rightRank,
		"right_addr", cfg.peerAddr(c.rightRank), "dtype", cfg.DType.String())
	return c, nil
}

// Rank returns this member's rank.
func (c *Communicator) Rank() int { return c.rank }

// Size returns the number of ranks in the ring.
func (c *Communicator) Size() int { return c.size }

// Config returns the validated configuration.
func (c *Communicator) Config() Config { return c.cfg }

// Err returns the failure that ended the ring, or nil while it is healthy.
func (c *Communicator) Err() error {
	select {
	case <-c.failed:
		return c.failErr
	default:
		return nil
	}
}

// Close ends this rank's part of the ring. Operations still in flight here fail with
// ErrClosed. Neighbours see an orderly end of their links: they finish operations
// that no longer need this rank and fail those that do. Close waits at most
// cfg.CloseTimeout for the neighbours to receive what was already sent.
func (c *Communicator) Close() error {
	c.closeOnce.Do(func() {
		graceful := false
		c.failOnce.Do(func() {
			c.failErr = &FaultError{Rank: c.rank, Addr: c.cfg.peerAddr(c.rank), ReportedBy: c.rank, Kind: ErrClosed,
				Detail: "Close was called"}
			close(c.failed)
			graceful = true
		})
		if graceful && c.size > 1 {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CloseTimeout)
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); closeLink(ctx, c.right, &c.sendMu) }()
			go func() { defer wg.Done(); closeLink(ctx, c.left, &c.leftSendMu) }()
			wg.Wait()
			cancel()
		}
		c.loops.Wait()
		c.log.Info("ring closed")
	})
	return nil
}

// closeLink closes conn in an orderly way when no Send is in progress on it, and at
// once otherwise.
func closeLink(ctx context.Context, conn Conn, mu *sync.Mutex) {
	if !lockWithin(mu, 100*time.Millisecond) {
		expired, cancelNow := context.WithCancel(ctx)
		cancelNow()
		conn.Close(expired)
		return
	}
	defer mu.Unlock()
	conn.Close(ctx)
}

// fail records the first failure, sends an ABORT frame to both neighbours and tears
// down the links.
func (c *Communicator) fail(e *FaultError, kind pb.FaultKind) {
	c.failOnce.Do(func() {
		c.failErr = e
		close(c.failed)
		c.log.Error("ring failed", "err", e, "fault_rank", e.Rank, "reported_by", e.ReportedBy)
		if c.size == 1 {
			return
		}
		c.loops.Add(1)
		go c.abortLinks(e, kind)
	})
}

// abortLinks sends an ABORT frame to each neighbour that can still take one, then
// closes both links.
func (c *Communicator) abortLinks(e *FaultError, kind pb.FaultKind) {
	defer c.loops.Done()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CloseTimeout)
	defer cancel()
	abort := func(conn Conn, mu *sync.Mutex, dst int) {
		if !lockWithin(mu, time.Second) {
			// An operation is stuck sending to this neighbour: tear the link down at
			// once, which also unblocks that send.
			expired, cancelNow := context.WithCancel(context.Background())
			cancelNow()
			conn.Close(expired)
			return
		}
		defer mu.Unlock()
		// A rank that is lost or stalled cannot take the frame; one that sent a bad
		// frame can, and learns why its ring ended.
		if dst != e.Rank || kind == pb.FaultKind_FAULT_KIND_PROTOCOL || kind == pb.FaultKind_FAULT_KIND_CANCELLED {
			f := &Frame{Kind: pb.FrameKind_FRAME_KIND_ABORT, JobID: c.cfg.JobID, Generation: c.cfg.Generation,
				SrcRank: uint32(c.rank), DstRank: uint32(dst), FaultRank: int32(e.Rank),
				FaultKind: kind, Reporter: uint32(e.ReportedBy), Message: truncate(e.Detail, maxMessageLen)}
			_ = conn.Send(f)
		}
		conn.Close(ctx)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); abort(c.right, &c.sendMu, c.rightRank) }()
	go func() { defer wg.Done(); abort(c.left, &c.leftSendMu, c.leftRank) }()
	wg.Wait()
}

func lockWithin(mu *sync.Mutex, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !mu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// closingOrFailed reports whether a broken link is expected because this rank has
// failed or is closing.
func (c *Communicator) closingOrFailed() bool {
	select {
	case <-c.failed:
		return true
	default:
		return false
	}
}

// leftLoop reads frames from the left neighbour and hands DATA frames to their operation.
func (c *Communicator) leftLoop() {
	defer c.loops.Done()
	for {
		f := newFrame()
		if err := c.left.Recv(f); err != nil {
			putFrame(f)
			if errors.Is(err, io.EOF) {
				// An orderly end: operations that still wait for this neighbour fail
				// in nextFrame once they have consumed what it sent.
				close(c.leftClosed)
				return
			}
			if errors.Is(err, ErrEndpointClosed) {
				// The fault is here, not at the left neighbour: name this rank.
				c.fail(&FaultError{Rank: c.rank, Addr: c.cfg.peerAddr(c.rank), ReportedBy: c.rank, Kind: ErrAborted,
					Detail: "this rank's endpoint was closed while its ring was in use: " + err.Error()}, pb.FaultKind_FAULT_KIND_CANCELLED)
				return
			}
			if !c.closingOrFailed() {
				c.fail(&FaultError{Rank: c.leftRank, Addr: c.cfg.peerAddr(c.leftRank), ReportedBy: c.rank,
					Kind: ErrPeerLost, Detail: "stream from left neighbour broke: " + err.Error() +
						" (its process exited, the connection dropped, or it answered no keepalive ping for 40 s)"}, pb.FaultKind_FAULT_KIND_PEER_LOST)
			}
			return
		}
		// A DATA frame moves to its operation; every other frame ends here. After a
		// protocol error the loop keeps draining until the failure closes the link.
		err := c.checkLinkFrame(f, c.leftRank)
		if err == nil {
			switch f.Kind {
			case pb.FrameKind_FRAME_KIND_DATA:
				c.lastData.Store(time.Now().UnixNano())
				if err = c.dispatch(f); err == nil {
					continue
				}
			case pb.FrameKind_FRAME_KIND_WAITING:
				c.lastWaiting.Store(time.Now().UnixNano())
			case pb.FrameKind_FRAME_KIND_ABORT:
				c.fail(c.remoteFault(f), f.FaultKind)
			default:
				err = fmt.Errorf("field kind is %v, expected DATA, WAITING or ABORT", f.Kind)
			}
		}
		f.Release()
		putFrame(f)
		if err != nil {
			c.fail(c.protocolFault(c.leftRank, err), pb.FaultKind_FAULT_KIND_PROTOCOL)
		}
	}
}

// rightLoop reads the right neighbour's side of the link, which carries only ABORT
// frames. Its end alone fails nothing: a neighbour that finished its last operation
// may exit at once. The next send to that neighbour fails and names it.
func (c *Communicator) rightLoop() {
	defer c.loops.Done()
	defer close(c.rightDone)
	f := newFrame()
	defer putFrame(f)
	for {
		if err := c.right.Recv(f); err != nil {
			if !errors.Is(err, io.EOF) && !c.closingOrFailed() {
				c.rightErr.Store(err.Error())
				c.log.Debug("stream back from the right neighbour ended", "peer", c.rightRank, "err", err)
			}
			return
		}
		err := c.checkLinkFrame(f, c.rightRank)
		if err == nil && f.Kind != pb.FrameKind_FRAME_KIND_ABORT {
			err = fmt.Errorf("field kind is %v, only ABORT may travel against the ring", f.Kind)
		}
		if err != nil {
			c.fail(c.protocolFault(c.rightRank, err), pb.FaultKind_FAULT_KIND_PROTOCOL)
		} else {
			c.fail(c.remoteFault(f), f.FaultKind)
		}
		f.Release()
	}
}

// waitingLoop sends a WAITING frame to the right for each request of an operation
// that has been blocked on the left neighbour for a while. Sending from its own
// goroutine keeps a blocked Send from stalling the operation.
func (c *Communicator) waitingLoop() {
	defer c.loops.Done()
	f := &Frame{Kind: pb.FrameKind_FRAME_KIND_WAITING, JobID: c.cfg.JobID, Generation: c.cfg.Generation,
		SrcRank: uint32(c.rank), DstRank: uint32(c.rightRank), FaultRank: -1}
	for {
		select {
		case <-c.failed:
			return
		case id := <-c.waitingNotice:
			f.OpID = id
			c.sendMu.Lock()
			_ = c.right.Send(f)
			c.sendMu.Unlock()
		}
	}
}

// checkLinkFrame checks the fields every frame on a link must carry.
func (c *Communicator) checkLinkFrame(f *Frame, from int) error {
	switch {
	case f.JobID != c.cfg.JobID:
		return fmt.Errorf("field job_id is %q, expected %q", f.JobID, c.cfg.JobID)
	case f.Generation != c.cfg.Generation:
		return fmt.Errorf("field generation is %d, expected %d", f.Generation, c.cfg.Generation)
	case int(f.SrcRank) != from:
		return fmt.Errorf("field src_rank is %d, expected %d", f.SrcRank, from)
	case int(f.DstRank) != c.rank:
		return fmt.Errorf("field dst_rank is %d, expected %d", f.DstRank, c.rank)
	}
	return nil
}

func (c *Communicator) protocolFault(peer int, err error) *FaultError {
	return &FaultError{Rank: peer, Addr: c.cfg.peerAddr(peer), ReportedBy: c.rank, Kind: ErrProtocol,
		Detail: "invalid frame: " + err.Error()}
}

func (c *Communicator) remoteFault(f *Frame) *FaultError {
	kind := ErrAborted
	switch f.FaultKind {
	case pb.FaultKind_FAULT_KIND_PEER_LOST:
		kind = ErrPeerLost
	case pb.FaultKind_FAULT_KIND_PEER_STALLED:
		kind = ErrPeerStalled
	case pb.FaultKind_FAULT_KIND_PROTOCOL:
		kind = ErrProtocol
	}
	rank := int(f.FaultRank)
	if rank < -1 || rank >= c.size {
		rank = -1
	}
	reporter := int(f.Reporter)
	if reporter >= c.size {
		reporter = int(f.SrcRank)
	}
	return &FaultError{Rank: rank, Addr: c.cfg.peerAddr(rank), ReportedBy: reporter, Kind: kind, Detail: f.Message}
}

// dispatch queues a DATA frame on its operation, creating the operation's state when
// the frame arrives before this rank started it.
func (c *Communicator) dispatch(f *Frame) error {
	c.mu.Lock()
	o := c.ops[f.OpID]
	if o == nil {
		if f.OpID <= c.issued {
			c.mu.Unlock()
			return fmt.Errorf("field op_id is %d, but that operation has already finished on this rank", f.OpID)
		}
		if f.OpID > c.issued+maxOpsAhead {
			c.mu.Unlock()
			return fmt.Errorf("field op_id is %d, more than %d ahead of this rank's last operation %d", f.OpID, maxOpsAhead, c.issued)
		}
		o = c.newOp(f.OpID)
		c.ops[f.OpID] = o
	}
	c.mu.Unlock()
	o.push(f)
	return nil
}

// begin starts the next operation.
func (c *Communicator) begin() (*opState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Err(); err != nil {
		return nil, err
	}
	c.issued++
	o := c.ops[c.issued]
	if o == nil {
		o = c.newOp(c.issued)
		c.ops[c.issued] = o
	}
	return o, nil
}

// end removes an operation from the table and recycles its state.
func (c *Communicator) end(o *opState) {
	c.mu.Lock()
	delete(c.ops, o.id)
	c.mu.Unlock()
	o.drain()
	if c.Err() == nil {
		c.opPool.Put(o) // after a failure a transport may still hold its counters
	}
}

func (c *Communicator) newOp(id uint64) *opState {
	o, _ := c.opPool.Get().(*opState)
	if o == nil {
		o = &opState{notify: make(chan struct{}, 1), released: make(chan struct{}, 1)}
		o.sendsA.op, o.sendsB.op = o, o
	}
	o.id = id
	o.bytesSent, o.bytesRecv = 0, 0
	return o
}
