//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package node

import (
	"fmt"
	"os"
)

// LockFile is the file in an output folder that the run writing the folder
// holds an exclusive lock on.
const LockFile = ".ringtune.lock"

// LauncherLockFile is the lock file of the process that launches a run's nodes.
const LauncherLockFile = ".ringtune-train.lock"

// LockOutput creates the output folder. This platform has no flock, so it does
// not keep two runs from writing into one folder.
func LockOutput(output string) (*os.File, error) { return LockOutputFile(output, LockFile) }

// LockOutputFile is LockOutput on the lock file name in output.
func LockOutputFile(output, _ string) (*os.File, error) {
	if err := os.MkdirAll(output, 0o755); err != nil {
		return nil, fmt.Errorf("creating the output folder: %w", err)
	}
	return os.CreateTemp(output, ".ringtune-unlocked-")
}
