package main

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill a worker whose launcher died.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// setNodeProcAttr makes the kernel kill a node process whose launcher died. It
// also puts the process in a group of its own, so that a Ctrl-C on the terminal
// reaches only the launcher, which then stops the nodes with one SIGTERM each.
func setNodeProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
