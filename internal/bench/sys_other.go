//go:build !linux

package bench

import (
	"net"
	"syscall"
	"time"
)

// nodeSysProcAttr: outside Linux the node shares the bench's process group.
func nodeSysProcAttr() *syscall.SysProcAttr { return nil }

// selfCPU is not measured outside Linux.
func selfCPU() (user, sys time.Duration) { return 0, 0 }

// setRcvLowat is a no-op outside Linux: every arrival wakes the reader.
func setRcvLowat(net.Conn, int) error { return nil }
