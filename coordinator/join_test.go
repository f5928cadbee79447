package coordinator

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJoinRejected(t *testing.T) {
	tests := []struct {
		name       string
		modify     func(*Join)
		wantReason string
	}{
		{"missing node id", func(j *Join) { j.NodeID = "" }, "node id is missing"},
		{"missing address", func(j *Join) { j.Address = "" }, "address is missing"},
		{"job id", func(j *Join) { j.JobID = "job-2" }, `job id differs: node has "job-2", job has "job-1"`},
		{"binary version", func(j *Join) { j.Fingerprint.BinaryVersion = "v0.9.0" }, "binary version differs: node has v0.9.0, job has v1.0.0: run the same ringtune build everywhere"},
		{"config hash", func(j *Join) { j.Fingerprint.ConfigHash = "cfg-2" }, "resolved-config hash differs: node has cfg-2, job has cfg-1: start every process with the same config file and the same config flags (cluster.* and WORLD_SIZE included), and compare the resolved job config that each one logs"},
		{"model hash", func(j *Join) { j.Fingerprint.ModelHash = "model-2" }, "model hash differs: node has model-2, job has model-1: give every process the same model files"},
		{"dataset hash", func(j *Join) { j.Fingerprint.DatasetHash = "data-2" }, "dataset hash differs: node has data-2, job has data-1: give every process the same data and tokenizer files"},
		{"rank above range", func(j *Join) { j.RequestedRank = 3 }, "requested rank 3 is out of range: the job has ranks 0 to 2 (or request -1 for any rank)"},
		{"negative rank", func(j *Join) { j.RequestedRank = -2 }, "requested rank -2 is out of range: the job has ranks 0 to 2 (or request -1 for any rank)"},
		{"rank taken", func(j *Join) { j.RequestedRank = 1 }, `requested rank 1 is already taken by node "a"`},
		{"address taken", func(j *Join) { j.Address = "a:7000" }, `address a:7000 is already used by node "a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCoordinator(t, testConfig(3))
			mustStep(t, c, joinOf("a", 1))
			join := joinOf("b", -1)
			tt.modify(&join)

			actions := mustStep(t, c, join)

			require.Equal(t, []Action{JoinRejected{NodeID: join.NodeID, Generation: 1, Reason: tt.wantReason}}, actions)
			assert.Equal(t, PhaseRendezvous, c.Phase())
			// The rejected node must not hold a place: two more joins start the job.
			mustStep(t, c, joinOf("c", -1))
			assert.Len(t, mustStep(t, c, joinOf("d", -1)), 3)
		})
	}
}

func TestRankAssignment(t *testing.T) {
	tests := []struct {
		name      string
		requested []int // requested rank of node n<i>, in join order
		wantRanks []int // rank of node n<i>
	}{
		{"all any", []int{-1, -1, -1, -1}, []int{0, 1, 2, 3}},
		{"all requested", []int{3, 2, 1, 0}, []int{3, 2, 1, 0}},
		{"requested after any", []int{-1, -1, 0, -1}, []int{1, 2, 0, 3}},
		{"any fills lowest free", []int{2, -1, 0, -1}, []int{2, 1, 0, 3}},
		{"last requested", []int{-1, -1, -1, 1}, []int{0, 2, 3, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCoordinator(t, testConfig(len(tt.requested)))
			var actions []Action
			for i, rank := range tt.requested {
				actions = mustStep(t, c, joinOf(nodeName(i), rank))
			}

			require.Len(t, actions, len(tt.requested))
			wantRanks := make(map[string]int)
			for i, rank := range tt.wantRanks {
				wantRanks[nodeName(i)] = rank
			}
			gotRanks := make(map[string]int)
			for rank, action := range actions {
				accepted, ok := action.(JoinAccepted)
				require.True(t, ok, "action %d is %T", rank, action)
				assert.Equal(t, rank, accepted.Rank, "JoinAccepted must come in rank order")
				gotRanks[accepted.NodeID] = accepted.Rank
			}
			assert.Equal(t, wantRanks, gotRanks)
		})
	}
}

func TestJoinAcceptedContents(t *testing.T) {
	c := newTestCoordinator(t, testConfig(3))

	actions := mustStep(t, c, joinOf("b", 1), joinOf("c", -1), joinOf("a", -1))

	wantRing := []string{"c:7000", "b:7000", "a:7000"}
	wantShard := ShardPlan{Seed: 42, Epoch: 0, WorldSize: 3}
	require.Equal(t, []Action{
		JoinAccepted{NodeID: "c", Rank: 0, WorldSize: 3, Generation: 1, Ring: wantRing, Shard: wantShard, SourceRank: -1},
		JoinAccepted{NodeID: "b", Rank: 1, WorldSize: 3, Generation: 1, Ring: wantRing, Shard: wantShard, SourceRank: -1},
		JoinAccepted{NodeID: "a", Rank: 2, WorldSize: 3, Generation: 1, Ring: wantRing, Shard: wantShard, SourceRank: -1},
	}, actions)
	assert.Equal(t, PhaseRunning, c.Phase())
}

func TestJoinSingleNodeJob(t *testing.T) {
	c := newTestCoordinator(t, testConfig(1))

	actions := mustStep(t, c, joinOf("a", -1))

	require.Len(t, actions, 1)
	assert.Equal(t, 0, actions[0].(JoinAccepted).Rank)
	assert.Equal(t, []string{"a:7000"}, actions[0].(JoinAccepted).Ring)
}

func TestJoinRepeated(t *testing.T) {
	tests := []struct {
		name        string
		running     bool
		modify      func(*Join)
		wantActions []Action
	}{
		{
			name:        "identical during rendezvous",
			modify:      func(*Join) {},
			wantActions: nil,
		},
		{
			name:    "identical while running",
			running: true,
			modify:  func(*Join) {},
			wantActions: []Action{JoinAccepted{
				NodeID: "n1", Rank: 1, WorldSize: 2, Generation: 1,
				Ring:       []string{"n0:7000", "n1:7000"},
				Shard:      ShardPlan{Seed: 42, WorldSize: 2},
				SourceRank: -1,
			}},
		},
		{
			name:   "other address",
			modify: func(j *Join) { j.Address = "elsewhere:7000" },
			wantActions: []Action{JoinRejected{NodeID: "n1", Generation: 1,
				Reason: `node id "n1" already joined with address n1:7000 and requested rank -1; node ids must be unique`}},
		},
		{
			name:   "other requested rank",
			modify: func(j *Join) { j.RequestedRank = 0 },
			wantActions: []Action{JoinRejected{NodeID: "n1", Generation: 1,
				Reason: `node id "n1" already joined with address n1:7000 and requested rank -1; node ids must be unique`}},
		},
		{
			name:    "other fingerprint while running",
			running: true,
			modify:  func(j *Join) { j.Fingerprint.ModelHash = "model-2" },
			wantActions: []Action{JoinRejected{NodeID: "n1", Generation: 1,
				Reason: `node id "n1" already joined with address n1:7000, requested rank -1 and another fingerprint or job id; node ids must be unique`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestCoordinator(t, testConfig(2))
			mustStep(t, c, joinOf("n1", -1))
			if tt.running {
				mustStep(t, c, joinOf("n0", 0))
			}
			phase := c.Phase()
			join := joinOf("n1", -1)
			tt.modify(&join)

			actions := mustStep(t, c, join)

			assert.Equal(t, tt.wantActions, actions)
			assert.Equal(t, phase, c.Phase())
		})
	}
}

func TestJoinAfterStart(t *testing.T) {
	tests := []struct {
		name       string
		finish     func(*testing.T, *Coordinator)
		wantReason string
	}{
		{"running", func(*testing.T, *Coordinator) {}, `job "job-1" is already running with all 2 ranks assigned; to replace a lost node, start the replacement again once the coordinator has declared that node lost`},
		{"failed", func(t *testing.T, c *Coordinator) { mustStep(t, c, Dead{NodeID: "n0"}) }, `job "job-1" has failed and accepts no nodes`},
		{"done", func(t *testing.T, c *Coordinator) {
			for step := 1; step <= 10; step++ {
				mustStep(t, c, reportOf(0, step, 1), reportOf(1, step, 1))
			}
		}, `job "job-1" has finished and accepts no nodes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startJob(t, testConfig(2))
			tt.finish(t, c)

			late := mustStep(t, c, joinOf("late", -1))
			member := mustStep(t, c, joinOf("n1", -1))

			assert.Equal(t, []Action{JoinRejected{NodeID: "late", Generation: 1, Reason: tt.wantReason}}, late)
			if tt.name == "running" {
				// A retry of a member while running is accepted again.
				require.Len(t, member, 1)
				assert.IsType(t, JoinAccepted{}, member[0])
				return
			}
			assert.Equal(t, []Action{JoinRejected{NodeID: "n1", Generation: 1, Reason: tt.wantReason}}, member)
		})
	}
}
