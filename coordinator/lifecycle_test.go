package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJoinDeadline(t *testing.T) {
	tests := []struct {
		name        string
		joined      int
		tickAfter   time.Duration
		wantActions []Action
		wantPhase   Phase
	}{
		{"before deadline", 2, time.Minute - time.Nanosecond, nil, PhaseRendezvous},
		{"at deadline", 2, time.Minute, []Action{FailJob{Generation: 1, Rank: -1,
			Reason: "join deadline passed: 2 of 3 nodes joined within 1m0s"}}, PhaseFailed},
		{"after deadline with none joined", 0, time.Hour, []Action{FailJob{Generation: 1, Rank: -1,
			Reason: "join deadline passed: 0 of 3 nodes joined within 1m0s"}}, PhaseFailed},
		{"after deadline once running", 3, time.Hour, nil, PhaseRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCoordinator(t, testConfig(3))
			for i := range tt.joined {
				mustStep(t, c, joinOf(nodeName(i), -1))
			}

			actions := mustStep(t, c, Tick{Now: testStart.Add(tt.tickAfter)})

			assert.Equal(t, tt.wantActions, actions)
			assert.Equal(t, tt.wantPhase, c.Phase())
		})
	}
}

func TestJoinDeadlineFiresOnce(t *testing.T) {
	c := newTestCoordinator(t, testConfig(2))
	assert.Equal(t, testStart.Add(time.Minute), c.JoinDeadline())

	first := mustStep(t, c, Tick{Now: testStart.Add(time.Minute)})
	second := mustStep(t, c, Tick{Now: testStart.Add(2 * time.Minute)})

	assert.Len(t, first, 1)
	assert.Empty(t, second)
}

func TestMemberLostDuringRendezvous(t *testing.T) {
	tests := []struct {
		name  string
		event Event
	}{
		{"leave", Leave{NodeID: "a"}},
		{"dead", Dead{NodeID: "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCoordinator(t, testConfig(2))
			mustStep(t, c, joinOf("a", 0))

			lost := mustStep(t, c, tt.event)
			// Rank 0, the address and the node id are free again.
			mustStep(t, c, joinOf("b", 0))
			started := mustStep(t, c, joinOf("a", -1))

			assert.Empty(t, lost)
			require.Len(t, started, 2)
			assert.Equal(t, "b", started[0].(JoinAccepted).NodeID)
			assert.Equal(t, "a", started[1].(JoinAccepted).NodeID)
			assert.Equal(t, []string{"b:7000", "a:7000"}, started[0].(JoinAccepted).Ring)
		})
	}
}

func TestMemberLostWhileRunning(t *testing.T) {
	tests := []struct {
		name       string
		event      Event
		wantRank   int
		wantReason string
	}{
		{"dead rank 0", Dead{NodeID: "n0"}, 0, `rank 0 (node "n0" at n0:7000) was declared dead during step 3 of 10`},
		{"dead rank 2", Dead{NodeID: "n2"}, 2, `rank 2 (node "n2" at n2:7000) was declared dead during step 3 of 10`},
		{"leave rank 1", Leave{NodeID: "n1"}, 1, `rank 1 (node "n1" at n1:7000) left the job during step 3 of 10`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startJob(t, testConfig(3))
			for step := 1; step <= 2; step++ {
				mustStep(t, c, reportOf(0, step, 1), reportOf(1, step, 1), reportOf(2, step, 1))
			}

			actions := mustStep(t, c, tt.event)

			assert.Equal(t, []Action{FailJob{Generation: 1, Rank: tt.wantRank, Reason: tt.wantReason}}, actions)
			assert.Equal(t, PhaseFailed, c.Phase())
		})
	}
}

func TestMemberLostDropped(t *testing.T) {
	tests := []struct {
		name    string
		finish  bool
		event   Event
		wantErr error
	}{
		{"unknown node leaves", false, Leave{NodeID: "stranger"}, ErrUnknownNode},
		{"unknown node dead", false, Dead{NodeID: "stranger"}, ErrUnknownNode},
		{"dead after failure", true, Dead{NodeID: "n1"}, ErrJobFinished},
		{"leave after failure", true, Leave{NodeID: "n1"}, ErrJobFinished},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startJob(t, testConfig(2))
			if tt.finish {
				mustStep(t, c, Dead{NodeID: "n0"})
			}
			phase := c.Phase()

			actions, err := c.Step(tt.event)

			require.ErrorIs(t, err, tt.wantErr)
			assert.Empty(t, actions)
			assert.Equal(t, phase, c.Phase())
		})
	}
}

type unknownEvent struct{ Tick }

func TestStepUnknownEvent(t *testing.T) {
	c := newTestCoordinator(t, testConfig(2))

	actions, err := c.Step(unknownEvent{})

	require.ErrorIs(t, err, ErrUnknownEvent)
	assert.Empty(t, actions)
}
