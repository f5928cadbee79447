//go:build unix

package cudalib

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readCacheEntryWithin calls readCacheEntry and fails the test when it does not
// return within 5 s, as a blocking open or an endless read would.
func readCacheEntryWithin(t *testing.T, path string) bool {
	t.Helper()
	done := make(chan bool, 1)
	go func() {
		_, ok := readCacheEntry(path)
		done <- ok
	}()
	select {
	case ok := <-done:
		return ok
	case <-time.After(5 * time.Second):
		t.Fatalf("readCacheEntry(%s) did not return within 5 s", path)
		return false
	}
}

func TestReadCacheEntrySkipsFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "entry.bin")
	require.NoError(t, syscall.Mkfifo(path, 0o644))
	assert.False(t, readCacheEntryWithin(t, path), "a FIFO is a miss")
}

func TestReadCacheEntrySkipsDevice(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skipf("no /dev/zero: %v", err)
	}
	path := filepath.Join(t.TempDir(), "entry.bin")
	require.NoError(t, os.Symlink("/dev/zero", path))
	assert.False(t, readCacheEntryWithin(t, path), "a symlink to a device is a miss")
}

func TestReadCacheEntrySkipsFolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "entry.bin")
	require.NoError(t, os.Mkdir(path, 0o755))
	assert.False(t, readCacheEntryWithin(t, path))
}

func TestReadCacheEntrySkipsOversizedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "entry.bin")
	require.NoError(t, writeCacheEntry(path, testPTX))
	// Truncate makes the file sparse, so it takes no disk space.
	require.NoError(t, os.Truncate(path, maxCacheEntrySize+1))
	assert.False(t, readCacheEntryWithin(t, path))
}

func TestReadCacheEntryFollowsSymlinkToFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target.bin")
	require.NoError(t, writeCacheEntry(target, testPTX))
	path := filepath.Join(dir, "entry.bin")
	require.NoError(t, os.Symlink(target, path))

	image, ok := readCacheEntry(path)
	require.True(t, ok, "a symlink to a regular file is read")
	assert.Equal(t, testPTX, image)
}
