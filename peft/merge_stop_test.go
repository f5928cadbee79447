package peft_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/peft"
)

// countdownContext is canceled from the moment Err has been called limit times, so a
// test can stop a merge at each of its cancellation checks. A negative limit never
// cancels and only counts the calls.
type countdownContext struct {
	limit int64
	calls atomic.Int64
}

func (c *countdownContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *countdownContext) Done() <-chan struct{}       { return nil }
func (c *countdownContext) Value(any) any               { return nil }

func (c *countdownContext) Err() error {
	n := c.calls.Add(1)
	if c.limit >= 0 && n > c.limit {
		return context.Canceled
	}
	return nil
}

// countContextChecks returns how many times a complete merge of f into a new directory
// calls ctx.Err.
func countContextChecks(t *testing.T, f mergeFixture) int64 {
	t.Helper()
	ctx := &countdownContext{limit: -1}
	_, err := peft.Merge(ctx, f.baseDir, f.adapterDir, filepath.Join(t.TempDir(), "merged"), peft.MergeOptions{MaxShardSize: 16 << 10})
	require.NoError(t, err)
	return ctx.calls.Load()
}

// stopPoints spreads cancellation points over a merge with total checks: the first
// ones, the middle and the last ones.
func stopPoints(total int64) []int64 {
	return []int64{0, 1, 2, total / 4, total / 2, 3 * total / 4, total - 2, total - 1}
}

func TestMergeStopsWhenCanceled(t *testing.T) {
	f := newMergeFixture(t, checkpoint.BF16, 16<<10, attentionConfig(), checkpoint.F32)
	total := countContextChecks(t, f)
	require.Greater(t, total, int64(100), "a row or 32 KiB per check")

	for _, limit := range stopPoints(total) {
		parent := t.TempDir()
		out := filepath.Join(parent, "merged")
		_, err := peft.Merge(&countdownContext{limit: limit}, f.baseDir, f.adapterDir, out, peft.MergeOptions{MaxShardSize: 16 << 10})
		require.ErrorIs(t, err, context.Canceled, "canceled after %d of %d checks", limit, total)
		assert.ErrorContains(t, err, "merge stopped before it finished")
		assert.ErrorContains(t, err, "nothing was written to "+out)

		entries, err := os.ReadDir(parent)
		require.NoError(t, err)
		assert.Empty(t, entries, "canceled after %d of %d checks: neither the output nor a temporary directory is left", limit, total)
	}
}

func TestMergeCancelCause(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	ctx, cancel := context.WithCancelCause(t.Context())
	interrupted := errors.New("interrupted by signal interrupt")
	cancel(interrupted)

	_, err := peft.Merge(ctx, f.baseDir, f.adapterDir, filepath.Join(t.TempDir(), "merged"), peft.MergeOptions{})
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, interrupted, "the cause is wrapped too")
	assert.ErrorContains(t, err, "merge stopped before it finished (interrupted by signal interrupt)")
}

// readTree returns the regular files under dir by relative path.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		files[rel] = string(data)
		return err
	})
	require.NoError(t, err)
	return files
}

func TestMergeOverwriteStopKeepsOldFiles(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 16<<10, attentionConfig(), checkpoint.F32)
	total := countContextChecks(t, f)

	parent := t.TempDir()
	out := filepath.Join(parent, "merged")
	// An earlier merge, with other weights, and a file of the user's.
	other := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	_, err := peft.Merge(t.Context(), other.baseDir, other.adapterDir, out, peft.MergeOptions{})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(out, "notes.txt"), []byte("keep"), 0o644))
	before := readTree(t, out)

	for _, limit := range stopPoints(total) {
		_, err := peft.Merge(&countdownContext{limit: limit}, f.baseDir, f.adapterDir, out, peft.MergeOptions{Overwrite: true, MaxShardSize: 16 << 10})
		require.ErrorIs(t, err, context.Canceled, "canceled after %d of %d checks", limit, total)
		assert.Equal(t, before, readTree(t, out), "canceled after %d of %d checks: the old files are unchanged", limit, total)
		entries, err := os.ReadDir(parent)
		require.NoError(t, err)
		require.Len(t, entries, 1, "canceled after %d of %d checks: no temporary directory is left", limit, total)
	}

	// Completed, the merge replaces the single file with shards and keeps notes.txt.
	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{Overwrite: true, MaxShardSize: 16 << 10})
	require.NoError(t, err)
	after := readTree(t, out)
	assert.Equal(t, "keep", after["notes.txt"])
	assert.NotContains(t, after, checkpoint.SingleFileName, "the stale single file is removed")
	assert.Contains(t, after, checkpoint.IndexFileName)
	got, _ := readModel(t, out)
	for name, ref := range f.reference(t) {
		mismatches := 0
		for i := range ref {
			if got[name][i] != float32(ref[i]) {
				mismatches++
			}
		}
		assert.Zero(t, mismatches, name)
	}
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "the temporary directory is removed after the files move")
}

func TestMergeOverwriteRejectsDirectoryInTheWay(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	out := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(out, "tokenizer.json"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(out, "notes.txt"), []byte("keep"), 0o644))
	before := readTree(t, out)

	_, err := peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{Overwrite: true})
	require.ErrorContains(t, err, filepath.Join(out, "tokenizer.json")+" is a directory")
	assert.Equal(t, before, readTree(t, out), "no file moves before the check")
}
