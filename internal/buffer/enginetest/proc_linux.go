package enginetest

import "syscall"

// childProcAttr makes a crash child die with the test process, so it cannot
// outlive a parent that was itself killed.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
