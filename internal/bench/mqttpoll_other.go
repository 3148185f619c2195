//go:build !linux

package bench

import "context"

// pollable: outside Linux every connection has its own goroutine.
func pollable() bool { return false }

func (d *mqttDriver) loadPolled(ctx, hard context.Context) { panic("no epoll outside Linux") }

func closeFD(int) {}
