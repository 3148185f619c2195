//go:build !linux

package bench

import (
	"errors"
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

// procRSS: no /proc outside Linux; the sampler reads /metrics instead.
func procRSS(int) (uint64, error) { return 0, errors.New("no /proc") }
