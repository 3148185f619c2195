//go:build !linux

package bench

import (
	"syscall"
	"time"
)

// nodeSysProcAttr: outside Linux the node shares the bench's process group.
func nodeSysProcAttr() *syscall.SysProcAttr { return nil }

// selfCPU is not measured outside Linux.
func selfCPU() time.Duration { return 0 }
