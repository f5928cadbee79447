package coordinator

import (
	"context"
	"errors"
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

func TestLateNodeErrorFailsDoneJob(t *testing.T) {
	ts := startServer(t, serverJobConfig(2, 1), nil)
	nodes := []*fakeNode{newFakeNode(t, ts.Addr(), "a"), newFakeNode(t, ts.Addr(), "b")}
	joinAll(t, nodes, []int{0, 1})
	decisions := reportAll(t, nodes, 1)
	require.True(t, decisions[0].Stop, "the last step must stop the job")

	// Rank 0 fails after the last step, say while it writes the final model.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, nodes[0].client.Leave(ctx, "a", errors.New("no space left on device"), false))
	nodes[0].finish(t)
	nodes[1].finish(t)

	err := ts.wait(t)
	var jobErr *JobError
	require.ErrorAs(t, err, &jobErr)
	assert.Equal(t, 0, jobErr.Rank)
	assert.Contains(t, jobErr.Reason, "no space left on device")
}
