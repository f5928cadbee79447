package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill a worker whose launcher died.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
