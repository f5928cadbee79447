//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockFile is the file in an output folder that the run writing the folder
// holds an exclusive flock on.
const LockFile = ".ringtune.lock"

// LauncherLockFile is the lock file of the process that launches a run's nodes
// (ringtune train), which writes job.yaml and logs/ before rank 0 starts.
const LauncherLockFile = ".ringtune-train.lock"

// LockOutput takes an exclusive lock on the output folder, creating it, so that
// two runs cannot write into one folder at once. Close the returned file to
// release the lock; the kernel releases it when the process dies.
func LockOutput(output string) (*os.File, error) { return LockOutputFile(output, LockFile) }

// LockOutputFile is LockOutput on the lock file name in output.
func LockOutputFile(output, name string) (*os.File, error) {
	if err := os.MkdirAll(output, 0o755); err != nil {
		return nil, fmt.Errorf("creating the output folder: %w", err)
	}
	path := filepath.Join(output, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("output %s is in use by another run: wait for it to end, or set another output", output)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return f, nil
}
