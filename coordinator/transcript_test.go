package coordinator

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt golden transcripts from the current output")

// TestTranscript feeds scripted jobs to a coordinator and compares every event and
// resulting action with testdata/<name>.txt. Run with -update to rewrite the files
// after an intended change, then review their diff.
func TestTranscript(t *testing.T) {
	badDataset := joinOf("x", -1)
	badDataset.Fingerprint.DatasetHash = "data-2"
	staleReport := reportOf(0, 2, 9)
	staleReport.Generation = 0

	tests := []struct {
		name   string
		script []Event
	}{
		{
			// A rejected join, a rank conflict, a retried join before and after the
			// ring forms, a stale report, checkpoints and the end of the job.
			name: "job_done",
			script: []Event{
				Tick{Now: testStart.Add(10 * time.Second)},
				joinOf("a", -1),
				badDataset,
				joinOf("b", 0),
				joinOf("c", 0),
				joinOf("a", -1),
				joinOf("c", -1),
				reportOf(0, 1, 2.0), reportOf(1, 1, 2.5), reportOf(2, 1, 3.0),
				staleReport,
				reportOf(2, 2, 1.5), reportOf(1, 2, 1.5), reportOf(0, 2, 1.5),
				joinOf("b", 0),
				reportOf(0, 3, 1.0), reportOf(1, 3, 1.0), reportOf(2, 3, 1.0),
				reportOf(0, 4, 0.5), reportOf(1, 4, 0.5), reportOf(2, 4, 0.5),
				Dead{NodeID: "a"},
				Tick{Now: testStart.Add(time.Hour)},
			},
		},
		{
			// A node leaves during rendezvous and its rank goes to a later node, then
			// a rank dies during step 2 and the job fails.
			name: "rank_lost",
			script: []Event{
				joinOf("a", 2),
				Leave{NodeID: "a"},
				joinOf("b", -1),
				joinOf("c", 2),
				joinOf("d", -1),
				reportOf(0, 1, 2.0), reportOf(1, 1, 2.0), reportOf(2, 1, 2.0),
				reportOf(0, 2, 1.0),
				Dead{NodeID: "c"},
				reportOf(1, 2, 1.0),
				joinOf("a", 2),
			},
		},
		{
			name: "join_deadline",
			script: []Event{
				joinOf("a", -1),
				Tick{Now: testStart.Add(59 * time.Second)},
				Tick{Now: testStart.Add(60 * time.Second)},
				joinOf("b", -1),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(3)
			cfg.TotalSteps = 4
			cfg.CheckpointInterval = 2
			c := newTestCoordinator(t, cfg)

			var out strings.Builder
			for _, event := range tt.script {
				fmt.Fprintf(&out, "> %s\n", describeEvent(event))
				actions, err := c.Step(event)
				if err != nil {
					fmt.Fprintf(&out, "  dropped: %v\n", err)
				}
				for _, action := range actions {
					assert.Equal(t, c.Generation(), action.ActionGeneration())
					fmt.Fprintf(&out, "  %s\n", describeAction(action))
				}
			}

			path := filepath.Join("testdata", tt.name+".txt")
			if *update {
				require.NoError(t, os.MkdirAll("testdata", 0o755))
				require.NoError(t, os.WriteFile(path, []byte(out.String()), 0o644))
			}
			want, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s is missing: run go test ./coordinator -run TestTranscript -update", path)
			}
			require.NoError(t, err)
			assert.Equal(t, string(want), out.String())
		})
	}
}

func describeEvent(event Event) string {
	switch e := event.(type) {
	case Join:
		s := fmt.Sprintf("join node=%s addr=%s rank=%d", e.NodeID, e.Address, e.RequestedRank)
		if e.Fingerprint != testFingerprint {
			s += fmt.Sprintf(" fingerprint=%+v", e.Fingerprint)
		}
		return s
	case Leave:
		return "leave node=" + e.NodeID
	case Dead:
		return "dead node=" + e.NodeID
	case StepReport:
		return fmt.Sprintf("report rank=%d gen=%d step=%d loss=%g tokens=%d",
			e.Rank, e.Generation, e.Step, e.Loss, e.Tokens)
	case Tick:
		return fmt.Sprintf("tick +%v", e.Now.Sub(testStart))
	}
	return fmt.Sprintf("%T", event)
}

func describeAction(action Action) string {
	switch a := action.(type) {
	case JoinAccepted:
		return fmt.Sprintf("JoinAccepted node=%s rank=%d/%d gen=%d ring=%v shard=%+v",
			a.NodeID, a.Rank, a.WorldSize, a.Generation, a.Ring, a.Shard)
	case JoinRejected:
		return fmt.Sprintf("JoinRejected node=%s gen=%d: %s", a.NodeID, a.Generation, a.Reason)
	case FailJob:
		return fmt.Sprintf("FailJob gen=%d rank=%d: %s", a.Generation, a.Rank, a.Reason)
	case Checkpoint:
		return fmt.Sprintf("Checkpoint gen=%d step=%d", a.Generation, a.Step)
	case StepSummary:
		return fmt.Sprintf("StepSummary gen=%d step=%d loss=%.4f tokens=%d tok/s=%.1f bytes=%d compute=%v allreduce=%v exposed=%v mem=%d",
			a.Generation, a.Step, a.MeanLoss, a.Tokens, a.TokensPerSecond, a.BytesSent,
			a.MaxComputeTime, a.MaxAllReduceTime, a.MaxExposedAllReduceTime, a.MaxPeakMemory)
	case Done:
		return fmt.Sprintf("Done gen=%d step=%d", a.Generation, a.Step)
	}
	return fmt.Sprintf("%T", action)
}
