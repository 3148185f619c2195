//go:build !linux

package enginetest

import "syscall"

// childProcAttr: without Pdeathsig a crash child stops by itself, at its record
// bound or its -test.timeout.
func childProcAttr() *syscall.SysProcAttr { return nil }
