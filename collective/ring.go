package collective

import (
	"context"
	"fmt"
	"time"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// ReduceOp selects how AllReduce combines the ranks' buffers.
type ReduceOp int

const (
	// Sum leaves the elementwise sum of all ranks' buffers.
	Sum ReduceOp = iota
	// Avg leaves the sum divided by the world size.
	Avg
)

// Work is the handle of an asynchronous operation.
type Work struct {
	done  chan struct{}
	err   error
	stats OpStats
}

// Wait blocks until the operation finishes and returns its error.
func (w *Work) Wait() error {
	<-w.done
	return w.err
}

// Done is closed when the operation finishes.
func (w *Work) Done() <-chan struct{} { return w.done }

// Stats returns the operation's counters; valid after Done is closed.
func (w *Work) Stats() OpStats { return w.stats }

// AllReduce combines buf with the buffers of every other rank, in place. Every rank
// ends with identical values. It fails the ring when ctx is done before it finishes.
func (c *Communicator) AllReduce(ctx context.Context, buf []float32, op ReduceOp) error {
	_, err := c.allReduce(ctx, buf, op, c.cfg.DType)
	return err
}

// AllReduceFloat32 is AllReduce with float32 on the wire whatever the ring's DType,
// for values that bf16 would round, such as token counts and loss sums. Every rank
// must call it for the same operation.
func (c *Communicator) AllReduceFloat32(ctx context.Context, buf []float32, op ReduceOp) error {
	_, err := c.allReduce(ctx, buf, op, Float32)
	return err
}

// AllReduceStats is AllReduce returning the operation's counters.
func (c *Communicator) AllReduceStats(ctx context.Context, buf []float32, op ReduceOp) (OpStats, error) {
	return c.allReduce(ctx, buf, op, c.cfg.DType)
}

// AllReduceAsync starts an AllReduce and returns at once. buf must not be touched
// until the Work is done. Operations started this way run concurrently; every rank
// must start them in the same order.
func (c *Communicator) AllReduceAsync(ctx context.Context, buf []float32, op ReduceOp) *Work {
	w := &Work{done: make(chan struct{})}
	o, err := c.begin()
	if err != nil {
		w.err = err
		close(w.done)
		return w
	}
	go func() {
		w.stats, w.err = c.runAllReduce(ctx, o, buf, op, c.cfg.DType)
		close(w.done)
	}()
	return w
}

func (c *Communicator) allReduce(ctx context.Context, buf []float32, op ReduceOp, dtype WireDType) (OpStats, error) {
	o, err := c.begin()
	if err != nil {
		return OpStats{}, err
	}
	return c.runAllReduce(ctx, o, buf, op, dtype)
}

// runAllReduce runs an all-reduce with dtype on the wire.
func (c *Communicator) runAllReduce(ctx context.Context, o *opState, buf []float32, op ReduceOp, dtype WireDType) (OpStats, error) {
	start := time.Now()
	defer c.end(o)
	var err error
	switch {
	case c.size == 1:
		// A ring of one: nothing travels and nothing is touched.
	case len(buf) == 0 || len(buf)*4 <= c.cfg.SmallBytes:
		// An empty buffer still takes its N-1 empty frames, so that a rank whose
		// buffer is not empty finds out at once that the lengths disagree.
		err = c.allReduceSmall(ctx, o, buf, dtype)
	default:
		err = c.allReduceRing(ctx, o, buf, dtype)
	}
	if err != nil {
		return OpStats{}, c.opError("all-reduce", o, len(buf), err)
	}
	if op == Avg && c.size > 1 {
		n := float32(c.size)
		for i := range buf {
			buf[i] /= n
		}
	}
	st := c.record(o, len(buf)*4, time.Since(start))
	return st, nil
}

func (c *Communicator) opError(opName string, o *opState, count int, err error) error {
	return fmt.Errorf("collective: rank %d: %s op %d of %d elements failed: %w", c.rank, opName, o.id, count, err)
}

// lookahead is how many chunks of its own segment a rank sends ahead of the chunks it
// has received in the first reduce-scatter step: enough slack to keep the pipeline
// busy, few enough that receive queues stay small.
const lookahead = 4

// allReduceRing runs N-1 reduce-scatter steps, then N-1 all-gather steps. Each step
// sends one segment to the right and receives one from the left, chunk by chunk, and
// a chunk received in one step is sent on in the next as soon as it is reduced.
func (c *Communicator) allReduceRing(ctx context.Context, o *opState, buf []float32, dtype WireDType) error {
	n, r := c.size, c.rank
	g := chunkGeometry{count: len(buf), size: n, chunkElems: c.cfg.ChunkBytes / 4}
	mod := func(x int) int { return ((x % n) + n) % n }

	// Reduce-scatter, step k receives segment r-k-1 and adds it to ours. Each chunk is
	// sent on as step k+1 as soon as it is reduced. Our own segment r goes out as step 0
	// at most lookahead chunks ahead of the chunks received, so no rank runs far ahead of
	// its right neighbour and receive queues stay short. After the last step this rank
	// owns the full sum of segment r+1, which starts the all-gather.
	ownStart, ownLen := g.segment(r)
	ownChunks, ownSent := g.chunks(ownLen), 0
	sendOwn := func(upTo int) error {
		for ; ownSent < min(upTo, ownChunks); ownSent++ {
			off, cnt := g.chunk(ownLen, ownSent)
			own := buf[ownStart+off : ownStart+off+cnt]
			if err := c.sendChunk(o, pb.Op_OP_ALL_REDUCE, 0, r, off, len(buf), own, dtype, &o.sendsA); err != nil {
				return err
			}
		}
		return nil
	}
	for k := 0; k < n-1; k++ {
		seg := mod(r - k - 1)
		start, m := g.segment(seg)
		last := k == n-2
		steps := g.chunks(m)
		if k == 0 {
			steps = max(steps, g.chunks(ownLen))
		}
		for i := 0; i < steps; i++ {
			if k == 0 {
				if err := sendOwn(i + 1 + lookahead); err != nil {
					return err
				}
			}
			if i >= g.chunks(m) {
				continue
			}
			off, cnt := g.chunk(m, i)
			f, err := c.recvChunk(ctx, o, expect{op: pb.Op_OP_ALL_REDUCE, step: k, segment: seg, offset: off,
				count: len(buf), dtype: dtype, elems: cnt})
			if err != nil {
				return err
			}
			region := buf[start+off : start+off+cnt]
			applyWire(region, f.Data, dtype, combineAdd)
			f.Release()
			putFrame(f)
			counter := &o.sendsA
			if last {
				counter = &o.sendsB // the owned segment is never written again
				if dtype == BFloat16 {
					// Keep the rounded sum that goes on the wire, so every rank ends
					// with the same bits.
					roundBF16(region)
				}
			}
			if err := c.sendChunk(o, pb.Op_OP_ALL_REDUCE, k+1, seg, off, len(buf), region, dtype, counter); err != nil {
				return err
			}
		}
	}

	// The all-gather overwrites segments sent during the reduce-scatter, so those
	// sends must be off our hands first. This normally costs nothing: the left
	// neighbour cannot send the first all-gather chunk before it has received them.
	if err := c.waitReleased(ctx, o, &o.sendsA); err != nil {
		return err
	}

	// All-gather, step j receives the final segment r-j and passes it on unless the
	// right neighbour owns it.
	for j := 0; j < n-1; j++ {
		seg := mod(r - j)
		start, m := g.segment(seg)
		for i := 0; i < g.chunks(m); i++ {
			off, cnt := g.chunk(m, i)
			f, err := c.recvChunk(ctx, o, expect{op: pb.Op_OP_ALL_REDUCE, step: n - 1 + j, segment: seg, offset: off,
				count: len(buf), dtype: dtype, elems: cnt})
			if err != nil {
				return err
			}
			region := buf[start+off : start+off+cnt]
			applyWire(region, f.Data, dtype, combineCopy)
			f.Release()
			putFrame(f)
			if j < n-2 {
				if err := c.sendChunk(o, pb.Op_OP_ALL_REDUCE, n+j, seg, off, len(buf), region, dtype, &o.sendsB); err != nil {
					return err
				}
			}
		}
	}
	return c.waitReleased(ctx, o, &o.sendsB)
}

// allReduceSmall passes every rank's whole buffer around the ring (N-1 steps), then
// adds the N contributions in rank order, so every rank computes the same bits.
func (c *Communicator) allReduceSmall(ctx context.Context, o *opState, buf []float32, dtype WireDType) error {
	n, r, count := c.size, c.rank, len(buf)
	contrib := make([]float32, n*count) // (N, count); at most N · SmallBytes
	own := contrib[r*count : (r+1)*count]
	copy(own, buf)
	if dtype == BFloat16 {
		roundBF16(own)
	}
	if err := c.sendChunk(o, pb.Op_OP_ALL_REDUCE_SMALL, 0, r, 0, count, own, dtype, &o.sendsB); err != nil {
		return err
	}
	for j := 0; j < n-1; j++ {
		src := ((r-1-j)%n + n) % n
		f, err := c.recvChunk(ctx, o, expect{op: pb.Op_OP_ALL_REDUCE_SMALL, step: j, segment: src,
			count: count, dtype: dtype, elems: count})
		if err != nil {
			return err
		}
		part := contrib[src*count : (src+1)*count]
		applyWire(part, f.Data, dtype, combineCopy)
		f.Release()
		putFrame(f)
		if j < n-2 {
			if err := c.sendChunk(o, pb.Op_OP_ALL_REDUCE_SMALL, j+1, src, 0, count, part, dtype, &o.sendsB); err != nil {
				return err
			}
		}
	}
	if err := c.waitReleased(ctx, o, &o.sendsB); err != nil {
		return err
	}
	copy(buf, contrib[:count])
	for k := 1; k < n; k++ {
		part := contrib[k*count : (k+1)*count]
		for i, v := range part {
			buf[i] += v
		}
	}
	return nil
}

// Broadcast copies root's buf into buf on every other rank, passing it along the ring
// chunk by chunk, always as float32 (bit-exact). Every rank must name the same root.
func (c *Communicator) Broadcast(ctx context.Context, buf []float32, root int) error {
	if root < 0 || root >= c.size {
		return fmt.Errorf("collective: rank %d: broadcast root %d is not in [0, %d)", c.rank, root, c.size)
	}
	o, err := c.begin()
	if err != nil {
		return err
	}
	defer c.end(o)
	start := time.Now()
	if c.size > 1 {
		err = c.broadcast(ctx, o, buf, root)
	}
	if err != nil {
		return c.opError("broadcast", o, len(buf), err)
	}
	c.record(o, len(buf)*4, time.Since(start))
	return nil
}

func (c *Communicator) broadcast(ctx context.Context, o *opState, buf []float32, root int) error {
	n := c.size
	g := chunkGeometry{count: len(buf), size: 1, chunkElems: c.cfg.ChunkBytes / 4}
	hop := ((c.rank-root)%n + n) % n // distance from root along the ring
	forward := c.rightRank != root
	for i := 0; i < g.chunks(len(buf)); i++ {
		off, cnt := g.chunk(len(buf), i)
		region := buf[off : off+cnt]
		if hop > 0 {
			f, err := c.recvChunk(ctx, o, expect{op: pb.Op_OP_BROADCAST, step: hop - 1, segment: root, offset: off,
				count: len(buf), dtype: Float32, elems: cnt})
			if err != nil {
				return err
			}
			applyWire(region, f.Data, Float32, combineCopy)
			f.Release()
			putFrame(f)
		}
		if forward {
			if err := c.sendChunk(o, pb.Op_OP_BROADCAST, hop, root, off, len(buf), region, Float32, &o.sendsB); err != nil {
				return err
			}
		}
	}

	// The last rank before the root closes the ring with an empty frame. The root thus
	// learns that the broadcast arrived everywhere, and ranks that disagree on the root
	// fail instead of each returning as if it were the root.
	if hop == n-1 {
		if err := c.sendChunk(o, pb.Op_OP_BROADCAST, n-1, root, 0, len(buf), nil, Float32, &o.sendsB); err != nil {
			return err
		}
	}
	if hop == 0 {
		f, err := c.recvChunk(ctx, o, expect{op: pb.Op_OP_BROADCAST, step: n - 1, segment: root, count: len(buf), dtype: Float32})
		if err != nil {
			return err
		}
		f.Release()
		putFrame(f)
	}
	return c.waitReleased(ctx, o, &o.sendsB)
}

// Barrier returns once every rank has called Barrier: an empty frame goes N-1 hops
// around the ring, so each rank hears, directly or by relay, from every other.
func (c *Communicator) Barrier(ctx context.Context) error {
	o, err := c.begin()
	if err != nil {
		return err
	}
	defer c.end(o)
	n := c.size
	if n == 1 {
		return nil
	}
	if err := c.sendChunk(o, pb.Op_OP_BARRIER, 0, 0, 0, 0, nil, Float32, &o.sendsB); err != nil {
		return c.opError("barrier", o, 0, err)
	}
	for j := 0; j < n-1; j++ {
		f, err := c.recvChunk(ctx, o, expect{op: pb.Op_OP_BARRIER, step: j, dtype: Float32})
		if err != nil {
			return c.opError("barrier", o, 0, err)
		}
		f.Release()
		putFrame(f)
		if j < n-2 {
			if err := c.sendChunk(o, pb.Op_OP_BARRIER, j+1, 0, 0, 0, nil, Float32, &o.sendsB); err != nil {
				return c.opError("barrier", o, 0, err)
			}
		}
	}
	return nil
}
