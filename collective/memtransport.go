package collective

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/mem"
)

// MemNetwork connects in-process ranks without sockets, for fast tests. Frames are
// copied on Send, as a network would, so a sender may reuse its buffer at once.
type MemNetwork struct {
	mu        sync.Mutex
	endpoints map[string]*memEndpoint
}

// NewMemNetwork returns an empty in-memory network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{endpoints: map[string]*memEndpoint{}}
}

// Endpoint returns the transport of the rank listening at addr, creating it on first use.
func (n *MemNetwork) Endpoint(addr string) Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.endpoints[addr]
	if e == nil {
		e = &memEndpoint{net: n, addr: addr, acc: newAcceptor(time.Minute)}
		n.endpoints[addr] = e
	}
	return e
}

type memEndpoint struct {
	net  *MemNetwork
	addr string
	acc  *acceptor
}

func (e *memEndpoint) Dial(ctx context.Context, addr string, hello *Frame) (Conn, error) {
	e.net.mu.Lock()
	dst := e.net.endpoints[addr]
	e.net.mu.Unlock()
	if dst == nil {
		return nil, fmt.Errorf("dial %s: no in-memory endpoint listens there", addr)
	}
	a, b := newMemPipe()
	h := &Frame{}
	copyHeader(h, hello)
	if err := dst.acc.offer(ctx, h, func(want *Frame) Conn {
		reply := &Frame{}
		copyHeader(reply, want)
		_ = b.Send(reply)
		return b
	}); err != nil {
		return nil, fmt.Errorf("dial %s: %w: %v", addr, ErrRejected, err)
	}
	var f Frame
	if err := a.Recv(&f); err != nil {
		return nil, fmt.Errorf("dial %s: waiting for hello: %w", addr, err)
	}
	return a, nil
}

func (e *memEndpoint) Accept(ctx context.Context, want *Frame) (Conn, error) {
	return e.acc.accept(ctx, want)
}

// memQueue is one direction of a pipe: an unbounded FIFO of frames.
type memQueue struct {
	mu     sync.Mutex
	frames []memEntry // guarded by mu
	head   int        // index of the next frame; guarded by mu
	closed bool       // guarded by mu
	signal chan struct{}
}

// memEntry is a queued frame: its header, and its payload copy when it has one.
type memEntry struct {
	header  Frame
	payload mem.Buffer
}

func (q *memQueue) push(e memEntry) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		if e.payload != nil {
			e.payload.Free()
		}
		return io.ErrClosedPipe
	}
	if q.head == len(q.frames) {
		q.frames, q.head = q.frames[:0], 0
	}
	q.frames = append(q.frames, e)
	select {
	case q.signal <- struct{}{}:
	default:
	}
	return nil
}

func (q *memQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// memConn is one end of an in-memory pipe.
type memConn struct {
	in, out *memQueue
}

func newMemPipe() (*memConn, *memConn) {
	ab := &memQueue{signal: make(chan struct{}, 1)}
	ba := &memQueue{signal: make(chan struct{}, 1)}
	return &memConn{in: ba, out: ab}, &memConn{in: ab, out: ba}
}

func (c *memConn) Send(f *Frame) error {
	var e memEntry
	copyHeader(&e.header, f)
	if len(f.Payload) > 0 {
		e.payload = mem.Copy(f.Payload, framePayloadPool)
	}
	if f.release != nil {
		f.release.Release()
	}
	return c.out.push(e)
}

func (c *memConn) Recv(f *Frame) error {
	for {
		c.in.mu.Lock()
		if c.in.head < len(c.in.frames) {
			e := c.in.frames[c.in.head]
			c.in.frames[c.in.head] = memEntry{}
			c.in.head++
			c.in.mu.Unlock()
			f.Release()
			copyHeader(f, &e.header)
			if e.payload != nil {
				f.held = append(f.held, e.payload)
				f.Data = append(f.Data, e.payload.ReadOnlyData())
			}
			return nil
		}
		closed := c.in.closed
		c.in.mu.Unlock()
		if closed {
			return io.EOF
		}
		<-c.in.signal
	}
}

func (c *memConn) Close(context.Context) {
	c.out.close()
	c.in.close()
}

// copyHeader copies every field of src but the payload into dst, keeping the
// capacity of dst's payload slices.
func copyHeader(dst, src *Frame) {
	data, held := dst.Data[:0], dst.held[:0]
	*dst = Frame{
		Kind: src.Kind, JobID: src.JobID, Generation: src.Generation,
		SrcRank: src.SrcRank, DstRank: src.DstRank, WorldSize: src.WorldSize,
		OpID: src.OpID, Op: src.Op, Step: src.Step, Segment: src.Segment,
		Offset: src.Offset, Count: src.Count, DType: src.DType,
		FaultRank: src.FaultRank, Message: src.Message,
		FaultKind: src.FaultKind, Reporter: src.Reporter,
		ChunkBytes: src.ChunkBytes, SmallBytes: src.SmallBytes,
		Data: data, held: held,
	}
}
