package node

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readLines reads metrics.jsonl in dir.
func readLines(t *testing.T, dir string) []MetricsLine {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	require.NoError(t, err)
	var lines []MetricsLine
	for line := range bytes.Lines(raw) {
		var m MetricsLine
		require.NoError(t, json.Unmarshal(line, &m), "line %q", line)
		lines = append(lines, m)
	}
	return lines
}

func TestCompleteLastLineAddsEvalAndCheckpoint(t *testing.T) {
	dir := t.TempDir()
	// Step 2's line is the one rank 0 writes when its step report fails: no
	// evaluation, no checkpoint.
	existing := `{"step":1,"epoch":0,"loss":2.5,"lr":0.001,"target_tokens":40,"tokens_per_s":100,"elapsed_s":1,"time":"t1"}
{"step":2,"epoch":0,"loss":2.25,"lr":0.001,"target_tokens":42,"elapsed_s":2,"time":"t2"}
`
	require.NoError(t, os.WriteFile(filepath.Join(dir, MetricsFile), []byte(existing), 0o644))
	m, err := openMetricsLog(dir, 2)
	require.NoError(t, err)
	defer m.close()
	l := &stepLoop{runner: &runner{log: slog.New(slog.DiscardHandler)}, metrics: m}
	evalLoss, perplexity := 2.0, 7.39
	redo := MetricsLine{Step: 2, EvalLoss: &evalLoss, EvalPerplexity: &perplexity, EvalTokens: 99, Checkpoint: "ckpt/step-2"}

	require.NoError(t, l.completeLastLine(redo, true))
	require.NoError(t, m.write(MetricsLine{Step: 3, Time: "t3"}))

	lines := readLines(t, dir)
	require.Len(t, lines, 3)
	assert.Equal(t, 100.0, lines[0].TokensPerSecond, "earlier lines stay")
	got := lines[1]
	assert.Equal(t, 2, got.Step)
	require.NotNil(t, got.EvalLoss)
	assert.Equal(t, evalLoss, *got.EvalLoss)
	assert.Equal(t, 99, got.EvalTokens)
	assert.Equal(t, "ckpt/step-2", got.Checkpoint)
	assert.True(t, got.Recovered)
	assert.Equal(t, int64(42), got.TargetTokens, "the line keeps what rank 0 knew")
	assert.Equal(t, 3, lines[2].Step, "later lines append after the rewritten one")
}

func TestCompleteLastLineKeepsCompleteLine(t *testing.T) {
	dir := t.TempDir()
	existing := `{"step":2,"epoch":0,"loss":2.25,"lr":0.001,"target_tokens":42,"elapsed_s":2,"eval_loss":2.1,"checkpoint":"ckpt/step-2","time":"t2"}
`
	require.NoError(t, os.WriteFile(filepath.Join(dir, MetricsFile), []byte(existing), 0o644))
	m, err := openMetricsLog(dir, 2)
	require.NoError(t, err)
	defer m.close()
	l := &stepLoop{runner: &runner{log: slog.New(slog.DiscardHandler)}, metrics: m}
	evalLoss := 2.0
	redo := MetricsLine{Step: 2, EvalLoss: &evalLoss, Checkpoint: "ckpt/step-2"}

	require.NoError(t, l.completeLastLine(redo, true))

	raw, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	require.NoError(t, err)
	assert.Equal(t, existing, string(raw))
}
