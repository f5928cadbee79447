//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package peft

import (
	"errors"
	"os"
	"syscall"
)

// stageLocking reports whether tryLockDir can lock directories on this platform.
const stageLocking = true

// tryLockDir opens dir and takes an exclusive flock on it without waiting. It returns a
// nil file and no error when another open file holds the lock, and an error when the
// lock fails for another reason, such as a file system without flock support.
func tryLockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil
		}
		return nil, err
	}
	return f, nil
}
