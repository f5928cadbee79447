package collective

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// rawPeer is rank 1 of a ring of two whose frames the test writes by hand; rank 0 is
// a real Communicator.
type rawPeer struct {
	comm *Communicator
	out  Conn // rank 1 -> rank 0
	in   Conn // rank 0 -> rank 1
}

func newRawPeer(t *testing.T) *rawPeer {
	t.Helper()
	net := NewMemNetwork()
	peers := []string{"mem-0", "mem-1"}
	ep0, ep1 := net.Endpoint(peers[0]), net.Endpoint(peers[1])
	hello := func(src, dst uint32) *Frame {
		return &Frame{Kind: pb.FrameKind_FRAME_KIND_HELLO, JobID: "raw", Generation: 5, SrcRank: src, DstRank: dst, WorldSize: 2,
			FaultRank: -1, DType: pb.WireDType_WIRE_D_TYPE_FLOAT32, ChunkBytes: 4 << 10, SmallBytes: 64 << 10}
	}
	p := &rawPeer{}
	done := make(chan error, 1)
	go func() {
		cfg := testConfig("raw", 5, 0, 2, peers)
		cfg.ChunkBytes = 4 << 10
		var err error
		p.comm, err = New(context.Background(), cfg, ep0)
		done <- err
	}()
	// Bounded, so that a HELLO this test gets wrong fails it instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	p.in, err = ep1.Accept(ctx, hello(0, 1))
	require.NoError(t, err)
	p.out, err = ep1.Dial(ctx, peers[0], hello(1, 0))
	require.NoError(t, err)
	require.NoError(t, <-done)
	t.Cleanup(func() {
		p.comm.Close()
		p.out.Close(context.Background())
		p.in.Close(context.Background())
	})
	return p
}

// dataFrame is the first frame rank 0 expects from rank 1 in a ring all-reduce of
// count elements: step 0 carries rank 1's own segment 1.
func dataFrame(count int) *Frame {
	half := count / 2
	return &Frame{Kind: pb.FrameKind_FRAME_KIND_DATA, JobID: "raw", Generation: 5, SrcRank: 1, DstRank: 0,
		OpID: 1, Op: pb.Op_OP_ALL_REDUCE, Step: 0, Segment: 1, Offset: 0, Count: uint64(count),
		DType: pb.WireDType_WIRE_D_TYPE_FLOAT32, FaultRank: -1, Payload: make([]byte, 4*half)}
}

func TestBadFramesAreRejected(t *testing.T) {
	const count = 1024
	cases := []struct {
		name   string
		mutate func(f *Frame)
		field  string
	}{
		{"other job", func(f *Frame) { f.JobID = "intruder" }, "job_id"},
		{"old generation", func(f *Frame) { f.Generation = 4 }, "generation"},
		{"wrong sender", func(f *Frame) { f.SrcRank = 0 }, "src_rank"},
		{"wrong count", func(f *Frame) { f.Count = count + 2 }, "count"},
		{"short payload", func(f *Frame) { f.Payload = f.Payload[:8] }, "payload"},
		{"finished op", func(f *Frame) { f.OpID = 0 }, "op_id"},
		{"far future op", func(f *Frame) { f.OpID = 1 << 40 }, "op_id"},
		{"unknown kind", func(f *Frame) { f.Kind = pb.FrameKind_FRAME_KIND_HELLO }, "kind"},
		{"wrong dtype", func(f *Frame) { f.DType = pb.WireDType_WIRE_D_TYPE_BFLOAT16 }, "dtype"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newRawPeer(t)
			p.comm.cfg.SmallBytes = -1 // ring path for any size
			f := dataFrame(count)
			tc.mutate(f)
			require.NoError(t, p.out.Send(f))
			err := p.comm.AllReduce(context.Background(), make([]float32, count), Sum)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrProtocol)
			var fe *FaultError
			require.ErrorAs(t, err, &fe)
			assert.Equal(t, 1, fe.Rank, "the error must name the sender")
			assert.Contains(t, err.Error(), tc.field)
		})
	}
}

func TestStalledLeftTimesOut(t *testing.T) {
	p := newRawPeer(t)
	start := time.Now()
	err := p.comm.AllReduce(context.Background(), make([]float32, 100_000), Sum)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrPeerStalled)
	elapsed := time.Since(start)
	assert.GreaterOrEqual(t, elapsed, 2*time.Second)
	assert.Less(t, elapsed, 5*time.Second)
}

func TestSlowButHealthyPeerIsNotKilled(t *testing.T) {
	p := newRawPeer(t)
	p.comm.cfg.SmallBytes = -1
	p.comm.cfg.ChunkBytes = 8 << 10 // 2048 elements: two chunks per segment
	const count, chunk = 8192, 2048
	done := make(chan error, 1)
	go func() { done <- p.comm.AllReduce(context.Background(), make([]float32, count), Sum) }()

	// Rank 1 trickles its four chunks out 0.9 s apart: every gap is well below the 2 s
	// no-progress timeout, but the whole operation takes longer than it.
	start := time.Now()
	var f Frame
	for _, step := range []struct{ step, segment uint32 }{{0, 1}, {1, 0}} {
		for off := 0; off < count/2; off += chunk {
			time.Sleep(900 * time.Millisecond)
			g := dataFrame(count)
			g.Step, g.Segment, g.Offset, g.Payload = step.step, step.segment, uint64(off), make([]byte, 4*chunk)
			require.NoError(t, p.out.Send(g))
		}
		// Drain what rank 0 sent for this step.
		for off := 0; off < count/2; off += chunk {
			require.NoError(t, p.in.Recv(&f))
			f.Release()
		}
	}
	require.NoError(t, <-done)
	assert.Greater(t, time.Since(start), p.comm.cfg.NoProgressTimeout)
}

func TestContextCancelAbortsRing(t *testing.T) {
	p := newRawPeer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := p.comm.AllReduce(ctx, make([]float32, 100_000), Sum)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrAborted)
	// The neighbour hears about it in an ABORT frame.
	var f Frame
	for {
		require.NoError(t, p.in.Recv(&f))
		if f.Kind == pb.FrameKind_FRAME_KIND_ABORT {
			break
		}
		f.Release()
	}
	assert.Equal(t, pb.FaultKind_FAULT_KIND_CANCELLED, f.FaultKind)
}
