package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJoinFailsWhenCoordinatorLost(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 4), nil)
	node := newFakeNode(t, ts.Addr(), "a")

	// The only node waits in rendezvous while the coordinator goes away.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	joined := make(chan error, 1)
	go func() {
		_, err := node.client.Join(ctx, joinRequest("a", -1))
		joined <- err
	}()
	time.Sleep(200 * time.Millisecond)
	ts.cancel()

	select {
	case err := <-joined:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "lost the coordinator during rendezvous")
	case <-time.After(waitTimeout):
		t.Fatal("Join still waits after the coordinator stopped")
	}
}
