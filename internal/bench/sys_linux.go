package bench

import (
	"syscall"
	"time"
)

// nodeSysProcAttr puts the node in its own process group, so that a Ctrl-C
// meant for the bench does not stop the node before the bench has finished
// with it, and has the kernel send it SIGTERM should the bench die.
func nodeSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// selfCPU returns the CPU time (user and system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
