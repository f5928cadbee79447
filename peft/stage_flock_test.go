//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package peft_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringtune/ringtune/checkpoint"
	"github.com/ringtune/ringtune/peft"
)

func TestMergeRemovesStaleTemporaryDirs(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	parent := t.TempDir()
	out := filepath.Join(parent, "merged")

	// Left by a killed merge into out: nothing holds its lock.
	stale := filepath.Join(parent, ".merged.merging-1234567")
	require.NoError(t, os.Mkdir(stale, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(stale, "model.safetensors"), []byte("partial"), 0o644))
	// Held by a running merge, simulated by a flock of this process.
	running := filepath.Join(parent, ".merged.merging-7654321")
	require.NoError(t, os.Mkdir(running, 0o700))
	lock, err := os.Open(running)
	require.NoError(t, err)
	defer lock.Close()
	require.NoError(t, syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
	// Names that a merge into out does not create.
	unrelated := []string{".merged.merging-12x", ".other.merging-1", "merged.merging-1", ".merged.merging-"}
	for _, name := range unrelated {
		require.NoError(t, os.Mkdir(filepath.Join(parent, name), 0o755))
	}
	// A file with a temporary directory's name is not a directory that a merge made.
	require.NoError(t, os.WriteFile(filepath.Join(parent, ".merged.merging-99"), nil, 0o644))

	_, err = peft.Merge(t.Context(), f.baseDir, f.adapterDir, out, peft.MergeOptions{})
	require.NoError(t, err)

	_, err = os.Stat(stale)
	assert.ErrorIs(t, err, os.ErrNotExist, "the stale directory is removed")
	_, err = os.Stat(running)
	assert.NoError(t, err, "a locked directory is kept")
	for _, name := range append(unrelated, ".merged.merging-99") {
		_, err := os.Stat(filepath.Join(parent, name))
		assert.NoError(t, err, "%s is kept", name)
	}
}

// pausingContext blocks the merge in its tenth call of Err until resume is closed.
type pausingContext struct {
	countdownContext
	paused, resume chan struct{}
}

func (c *pausingContext) Err() error {
	if c.calls.Add(1) == 10 {
		close(c.paused)
		<-c.resume
	}
	return nil
}

func TestMergeLocksItsTemporaryDir(t *testing.T) {
	f := newMergeFixture(t, checkpoint.F32, 0, attentionConfig(), checkpoint.F32)
	parent := t.TempDir()
	ctx := &pausingContext{paused: make(chan struct{}), resume: make(chan struct{})}
	done := make(chan error)
	go func() {
		_, err := peft.Merge(ctx, f.baseDir, f.adapterDir, filepath.Join(parent, "merged"), peft.MergeOptions{})
		done <- err
	}()
	<-ctx.paused

	matches, err := filepath.Glob(filepath.Join(parent, ".merged.merging-*"))
	require.NoError(t, err)
	require.Len(t, matches, 1, "the merge writes into one temporary directory")
	dir, err := os.Open(matches[0])
	require.NoError(t, err)
	defer dir.Close()
	err = syscall.Flock(int(dir.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	assert.ErrorIs(t, err, syscall.EWOULDBLOCK, "the running merge holds the lock")

	close(ctx.resume)
	require.NoError(t, <-done)
}
