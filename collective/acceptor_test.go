package collective

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	pb "github.com/ringtune/ringtune/proto/ringtune/v1"
)

// TestAcceptorRejectsSupersededOffer covers a HELLO of generation 1 that arrives before
// the endpoint's member registers generation 2: the offer must fail as stale when the
// newer member registers, not wait out the acceptor's timeout.
func TestAcceptorRejectsSupersededOffer(t *testing.T) {
	a := newAcceptor(time.Minute)
	hello := &Frame{Kind: pb.FrameKind_FRAME_KIND_HELLO, JobID: "job", Generation: 1, SrcRank: 0, DstRank: 1, WorldSize: 2}
	offered := make(chan error, 1)
	go func() {
		offered <- a.offer(context.Background(), hello, func(*Frame) Conn { return nil })
	}()
	require.Eventually(t, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.waiting) == 1
	}, 5*time.Second, time.Millisecond, "the offer must wait for its member")

	ctx, cancel := context.WithCancel(context.Background())
	accepted := make(chan error, 1)
	go func() {
		_, err := a.accept(ctx, &Frame{JobID: "job", Generation: 2, SrcRank: 0, DstRank: 1, WorldSize: 2})
		accepted <- err
	}()

	select {
	case err := <-offered:
		assert.ErrorContains(t, err, "generation 1 of job \"job\" is stale: this endpoint serves generation 2")
	case <-time.After(10 * time.Second):
		t.Fatal("the offer of the older generation still waits after a newer member registered")
	}
	cancel()
	assert.ErrorIs(t, <-accepted, context.Canceled)
}
