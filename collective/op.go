package collective

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// opState is the receive queue and send accounting of one operation.
type opState struct {
	id uint64

	mu    sync.Mutex
	queue []*Frame // frames from the left neighbour not yet consumed; guarded by mu
	// notify is signalled after each push.
	notify chan struct{}

	// sendsA counts payloads in flight that point into regions the operation writes
	// again later (the reduce-scatter sends); sendsB counts all others.
	sendsA, sendsB sendCounter
	// released is signalled after each payload release.
	released chan struct{}

	timer *time.Timer
	// out is the header of the next outgoing frame; the transport copies it in Send.
	out Frame

	bytesSent, bytesRecv int64
}

func (o *opState) push(f *Frame) {
	o.mu.Lock()
	o.queue = append(o.queue, f)
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// take removes and returns the queued frame that e describes, or nil when it has not
// arrived. The left neighbour sends a chunk of step k+1 as soon as it has reduced it,
// so frames of neighbouring steps interleave on the wire and the queue stays a few
// frames long. The same scan returns an error for a queued frame that can never
// belong to the operation (another op type, element count or broadcast root), and
// for a queue longer than maxQueuedFrames, because otherwise ranks that disagree
// would wait for frames that never come.
func (o *opState) take(e expect) (*Frame, error) {
	step, segment, offset := uint32(e.step), uint32(e.segment), uint64(e.offset)
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, f := range o.queue {
		if f.Step != step || f.Segment != segment || f.Offset != offset {
			if err := checkSignature(f, e); err != nil {
				return nil, err
			}
			continue
		}
		copy(o.queue[i:], o.queue[i+1:])
		o.queue[len(o.queue)-1] = nil
		o.queue = o.queue[:len(o.queue)-1]
		return f, nil
	}
	if n := len(o.queue); n > maxQueuedFrames {
		return nil, fmt.Errorf("%d frames arrived that match no expected step, segment and offset (waiting for step %d segment %d offset %d)",
			n, step, segment, offset)
	}
	return nil, nil
}

func checkSignature(f *Frame, e expect) error {
	switch {
	case f.Op != e.op:
		return fmt.Errorf("field op is %v, expected %v: every rank must issue the same collective calls in the same order", f.Op, e.op)
	case f.Count != uint64(e.count):
		return fmt.Errorf("field count is %d, expected %d: every rank must pass a buffer of the same length", f.Count, e.count)
	case e.op == pb.Op_OP_BROADCAST && f.Segment != uint32(e.segment):
		return fmt.Errorf("field segment (the broadcast root) is %d, expected %d: every rank must name the same root", f.Segment, e.segment)
	}
	return nil
}

// drain releases the frames that no step consumed, after a failure.
func (o *opState) drain() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, f := range o.queue {
		f.Release()
		putFrame(f)
		o.queue[i] = nil
	}
	o.queue = o.queue[:0]
}

// sendCounter counts payloads handed to the transport and not yet released. It is the
// releaser of zero-copy payloads, which point into the caller's buffer.
type sendCounter struct {
	n  atomic.Int64
	op *opState
}

func (s *sendCounter) Release() {
	s.n.Add(-1)
	select {
	case s.op.released <- struct{}{}:
	default:
	}
}

// releaser is called once the transport no longer reads a payload.
type releaser interface{ Release() }

// stagingBuf holds an encoded bf16 payload until the transport has sent it. The
// bytes come from framePayloadPool, sized for the payload: a small-path frame carries
// a whole buffer and may be larger than a chunk.
type stagingBuf struct {
	b       *[]byte
	counter *sendCounter
	pool    *sync.Pool
}

func (s *stagingBuf) Release() {
	c := s.counter
	framePayloadPool.Put(s.b)
	s.counter, s.b = nil, nil
	s.pool.Put(s)
	c.Release()
}

var framePool = sync.Pool{New: func() any { return &Frame{} }}

func newFrame() *Frame { return framePool.Get().(*Frame) }

func putFrame(f *Frame) {
	f.reset()
	framePool.Put(f)
}

// chunkGeometry describes how an operation cuts a buffer of count elements.
type chunkGeometry struct {
	count      int // elements in the buffer
	size       int // ranks
	chunkElems int // elements per DATA frame
}

// segment returns the first element and length of segment s. Lengths differ by at
// most one, and the first count mod N segments are the longer ones.
func (g chunkGeometry) segment(s int) (start, n int) {
	base, rem := g.count/g.size, g.count%g.size
	start = s*base + min(s, rem)
	n = base
	if s < rem {
		n++
	}
	return start, n
}

// chunks returns the number of frames that carry n elements. An empty region still
// takes one empty frame, so that the receiver gets a frame for every step.
func (g chunkGeometry) chunks(n int) int {
	if n == 0 {
		return 1
	}
	return (n + g.chunkElems - 1) / g.chunkElems
}

// chunk returns the offset and length of chunk i of a region of n elements.
func (g chunkGeometry) chunk(n, i int) (off, m int) {
	off = i * g.chunkElems
	return off, min(g.chunkElems, n-off)
}

// sendChunk sends one DATA frame whose payload is data, encoded as dtype. Zero-copy
// float32 payloads are counted in counter until the transport releases them.
func (c *Communicator) sendChunk(o *opState, op pb.Op, step, segment int, offset int, count int,
	data []float32, dtype WireDType, counter *sendCounter) error {
	f := &o.out
	*f = Frame{
		Kind: pb.FrameKind_FRAME_KIND_DATA, JobID: c.cfg.JobID, Generation: c.cfg.Generation,
		SrcRank: uint32(c.rank), DstRank: uint32(c.rightRank), OpID: o.id, Op: op,
		Step: uint32(step), Segment: uint32(segment), Offset: uint64(offset), Count: uint64(count),
		DType: wireType(dtype), FaultRank: -1,
	}
	if len(data) > 0 {
		if dtype == Float32 {
			f.Payload = float32Bytes(data)
			f.release = counter
		} else {
			s, _ := c.stagePool.Get().(*stagingBuf)
			if s == nil {
				s = &stagingBuf{pool: &c.stagePool}
			}
			s.counter = counter
			s.b = framePayloadPool.Get(2 * len(data))
			encodeBF16(*s.b, data)
			f.Payload = *s.b
			f.release = s
		}
		counter.n.Add(1)
	}
	o.bytesSent += int64(len(f.Payload))
	c.sendMu.Lock()
	err := c.right.Send(f)
	c.sendMu.Unlock()
	f.Payload, f.release = nil, nil
	if err != nil {
		// A right neighbour that gave up sends an ABORT before it closes the link, and
		// that frame may still be unread: read the link to its end before blaming it.
		select {
		case <-c.rightDone:
		case <-time.After(time.Second):
		}
		if e := c.Err(); e != nil {
			return e
		}
		detail := "send to right neighbour failed: " + err.Error()
		if streamErr, ok := c.rightErr.Load().(string); ok {
			detail += " (its stream ended: " + streamErr + ")"
		}
		fe := &FaultError{Rank: c.rightRank, Addr: c.cfg.peerAddr(c.rightRank), ReportedBy: c.rank,
			Kind: ErrPeerLost, Detail: detail}
		c.fail(fe, pb.FaultKind_FAULT_KIND_PEER_LOST)
		return c.Err()
	}
	return nil
}

func wireType(d WireDType) pb.WireDType {
	if d == BFloat16 {
		return pb.WireDType_WIRE_D_TYPE_BFLOAT16
	}
	return pb.WireDType_WIRE_D_TYPE_FLOAT32
}

// maxQueuedFrames bounds the frames one operation holds that it does not wait for
// yet. A correct left neighbour keeps it to a few chunks; only a broken or hostile one
// reaches it.
const maxQueuedFrames = 1 << 16

// expect is the frame an operation waits for next.
type expect struct {
	op      pb.Op
	step    int
	segment int
	offset  int
	count   int
	dtype   WireDType
	elems   int // payload elements
}

// recvChunk waits for the next frame of o from the left neighbour and checks that it
// is the one e describes.
func (c *Communicator) recvChunk(ctx context.Context, o *opState, e expect) (*Frame, error) {
	f, err := c.nextFrame(ctx, o, e)
	if err != nil {
		return nil, err
	}
	if err := checkData(f, e); err != nil {
		f.Release()
		putFrame(f)
		c.fail(c.protocolFault(c.leftRank, fmt.Errorf("op %d: %w", o.id, err)), pb.FaultKind_FAULT_KIND_PROTOCOL)
		return nil, c.Err()
	}
	o.bytesRecv += int64(e.elems * elemBytes(e.dtype))
	return f, nil
}

func checkData(f *Frame, e expect) error {
	if err := checkSignature(f, e); err != nil {
		return err
	}
	switch {
	case f.Step != uint32(e.step):
		return fmt.Errorf("field step is %d, expected %d", f.Step, e.step)
	case f.Segment != uint32(e.segment):
		return fmt.Errorf("field segment is %d, expected %d", f.Segment, e.segment)
	case f.Offset != uint64(e.offset):
		return fmt.Errorf("field offset is %d, expected %d", f.Offset, e.offset)
	case e.elems > 0 && f.DType != wireType(e.dtype):
		return fmt.Errorf("field dtype is %v, expected %v: every rank must use the same wire dtype", f.DType, wireType(e.dtype))
	}
	if n := f.PayloadLen(); n != e.elems*elemBytes(e.dtype) {
		return fmt.Errorf("payload is %d bytes, expected %d (%d elements of %v)", n, e.elems*elemBytes(e.dtype), e.elems, e.dtype)
	}
	return nil
}

// nextFrame waits for the next frame of o. It fails the ring when ctx is done or when
// the left neighbour sends no data for cfg.NoProgressTimeout, unless that neighbour
// reports that it is itself waiting for its own left neighbour.
func (c *Communicator) nextFrame(ctx context.Context, o *opState, e expect) (*Frame, error) {
	// take returns the expected frame, or fails the ring on a frame that cannot match.
	take := func() (*Frame, error) {
		f, err := o.take(e)
		if err != nil {
			c.fail(c.protocolFault(c.leftRank, fmt.Errorf("op %d: %w", o.id, err)), pb.FaultKind_FAULT_KIND_PROTOCOL)
			return nil, c.failErr
		}
		return f, nil
	}
	if f, err := take(); f != nil || err != nil {
		return f, err
	}
	timeout := c.cfg.NoProgressTimeout
	tick := max(timeout/4, time.Millisecond)
	start := time.Now()
	var lastNotice time.Time
	if o.timer == nil {
		o.timer = time.NewTimer(tick)
	} else {
		o.timer.Reset(tick)
	}
	defer o.timer.Stop()
	for {
		select {
		case <-o.notify:
			if f, err := take(); f != nil || err != nil {
				return f, err
			}
		case <-c.failed:
			// Frames that arrived before the failure still complete the operation: a
			// neighbour that finished its part may close its end right after.
			if f, _ := o.take(e); f != nil {
				return f, nil
			}
			return nil, c.failErr
		case <-c.leftClosed:
			if f, _ := o.take(e); f != nil {
				return f, nil
			}
			c.fail(&FaultError{Rank: c.leftRank, Addr: c.cfg.peerAddr(c.leftRank), ReportedBy: c.rank, Kind: ErrPeerLost,
				Detail: fmt.Sprintf("the left neighbour closed its end of the ring while op %d waited for its data", o.id)},
				pb.FaultKind_FAULT_KIND_PEER_LOST)
			return nil, c.failErr
		case <-ctx.Done():
			c.fail(&FaultError{Rank: c.rank, Addr: c.cfg.peerAddr(c.rank), ReportedBy: c.rank, Kind: ErrAborted,
				Detail: fmt.Sprintf("op %d cancelled: %v", o.id, context.Cause(ctx))}, pb.FaultKind_FAULT_KIND_CANCELLED)
			return nil, c.failErr
		case now := <-o.timer.C:
			if now.Sub(start) >= tick && now.Sub(lastNotice) >= tick {
				lastNotice = now
				select {
				case c.waitingNotice <- o.id:
				default:
				}
			}
			clock := start
			if t := time.Unix(0, c.lastData.Load()); t.After(clock) {
				clock = t
			}
			idle := now.Sub(clock)
			leftWaiting := now.Sub(time.Unix(0, c.lastWaiting.Load())) < timeout/2
			if idle >= timeout && (!leftWaiting || now.Sub(start) >= 2*timeout) {
				c.fail(&FaultError{Rank: c.leftRank, Addr: c.cfg.peerAddr(c.leftRank), ReportedBy: c.rank,
					Kind: ErrPeerStalled, Detail: fmt.Sprintf("no data from the left neighbour for %v while op %d waited for it (no-progress timeout %v)",
						idle.Round(time.Millisecond), o.id, timeout)}, pb.FaultKind_FAULT_KIND_PEER_STALLED)
				return nil, c.failErr
			}
			o.timer.Reset(tick)
		}
	}
}

// waitReleased waits until the transport has released every payload counted in s.
// A right neighbour that reads nothing for cfg.NoProgressTimeout fails the ring.
func (c *Communicator) waitReleased(ctx context.Context, o *opState, s *sendCounter) error {
	if s.n.Load() == 0 {
		return nil
	}
	timeout := c.cfg.NoProgressTimeout
	if o.timer == nil {
		o.timer = time.NewTimer(timeout)
	} else {
		o.timer.Reset(timeout)
	}
	defer o.timer.Stop()
	for s.n.Load() > 0 {
		select {
		case <-o.released:
			o.timer.Reset(timeout)
		case <-c.failed:
			return c.failErr
		case <-ctx.Done():
			c.fail(&FaultError{Rank: c.rank, ReportedBy: c.rank, Kind: ErrAborted,
				Detail: fmt.Sprintf("op %d cancelled: %v", o.id, context.Cause(ctx))}, pb.FaultKind_FAULT_KIND_CANCELLED)
			return c.failErr
		case <-o.timer.C:
			c.fail(&FaultError{Rank: c.rightRank, Addr: c.cfg.peerAddr(c.rightRank), ReportedBy: c.rank,
				Kind: ErrPeerStalled, Detail: fmt.Sprintf("the right neighbour read none of op %d's data for %v (no-progress timeout)", o.id, timeout)},
				pb.FaultKind_FAULT_KIND_PEER_STALLED)
			return c.failErr
		}
	}
	return nil
}
