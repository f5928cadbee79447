//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package peft

import (
	"errors"
	"os"
)

// stageLocking reports whether tryLockDir can lock directories on this platform.
const stageLocking = false

func tryLockDir(string) (*os.File, error) {
	return nil, errors.ErrUnsupported
}
