package peft

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// stage is the temporary directory that Merge writes before it publishes the output. It
// is a sibling of the output directory named .OUT.merging-N, where OUT is the output's
// base name and N the decimal random number that os.MkdirTemp picks.
type stage struct {
	path string
	// lock is the open directory with an exclusive flock, held until the merge ends, so
	// that removeStaleStages of another merge leaves the directory alone. It is nil on
	// platforms and file systems without flock.
	lock *os.File
}

// stagePrefix returns the name prefix of the stage directories of merges into outDir.
func stagePrefix(outDir string) string {
	return "." + filepath.Base(filepath.Clean(outDir)) + ".merging-"
}

// createStage creates and locks a new stage directory next to outDir.
func createStage(outDir string) (*stage, error) {
	parent := filepath.Dir(filepath.Clean(outDir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	for range 3 {
		path, err := os.MkdirTemp(parent, stagePrefix(outDir)+"*")
		if err != nil {
			return nil, err
		}
		lock, err := tryLockDir(path)
		if err != nil {
			// No flock here, so no merge removes this directory either: removeStaleStages
			// removes only directories that it has locked.
			return &stage{path: path}, nil
		}
		if lock != nil && sameDirectory(lock, path) {
			return &stage{path: path, lock: lock}, nil
		}
		// removeStaleStages of another merge locked or removed the directory between
		// MkdirTemp and tryLockDir. Start over with a new name.
		if lock != nil {
			lock.Close()
		}
	}
	return nil, fmt.Errorf("cannot create a temporary directory next to %s: other merges into it removed all 3 attempts. Run one merge into a directory at a time", outDir)
}

// sameDirectory reports whether the open directory f is still the one at path.
func sameDirectory(f *os.File, path string) bool {
	opened, err := f.Stat()
	if err != nil {
		return false
	}
	current, err := os.Lstat(path)
	return err == nil && os.SameFile(opened, current)
}

// release drops the lock, once the directory has been published or removed.
func (s *stage) release() {
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// remove deletes the stage directory and everything in it.
func (s *stage) remove() error {
	defer s.release()
	return os.RemoveAll(s.path)
}

// removeStaleStages deletes the stage directories that earlier merges into outDir left
// when they were killed. A directory counts as stale when its name is one that
// createStage makes and no process holds its flock, because the kernel releases a flock
// when its holder exits, however it exits. Where flock is unavailable, nothing is
// removed. A stale directory that cannot be removed is logged and skipped.
func removeStaleStages(outDir string) {
	if !stageLocking {
		return
	}
	parent := filepath.Dir(filepath.Clean(outDir))
	entries, err := os.ReadDir(parent)
	if err != nil {
		return // a missing parent has no stale directories, and createStage reports other errors
	}
	prefix := stagePrefix(outDir)
	for _, e := range entries {
		suffix, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !isDecimal(suffix) || !e.IsDir() {
			continue
		}
		path := filepath.Join(parent, e.Name())
		lock, err := tryLockDir(path)
		if err != nil || lock == nil {
			continue // a running merge holds it, or it cannot be locked and so is kept
		}
		err = os.RemoveAll(path)
		lock.Close()
		if err != nil {
			slog.Warn("cannot remove the temporary directory of an interrupted merge", "path", path, "err", err)
			continue
		}
		slog.Info("removed the temporary directory of an interrupted merge", "path", path)
	}
}

func isDecimal(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
