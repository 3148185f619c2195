package bench

// On Linux the MQTT load is driven by a few goroutines that each watch many
// connections through their own epoll instance, instead of one goroutine per
// connection parked in Go's network poller. Each wake-up then serves every
// connection with acks waiting, a connection is read only when it has the
// PUBACKs its window is waiting for (SO_RCVLOWAT, level triggered: no read
// that finds nothing), and no goroutine is parked and woken per batch. At a
// fixed rate each goroutine also keeps its devices' schedule: it wakes when
// the next of their messages is due (the epoll wait's deadline) and sends
// every message due by then. It is written by hand for the same reason as
// mqttwire.go: the generator's CPU is taken from the broker it measures.

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

const (
	pollTick   = 50 * time.Millisecond // longest epoll wait: how soon a stop is seen
	pollEvents = 256
)

// pollable reports whether the load can be driven by epoll.
func pollable() bool { return true }

// loadPolled sends over every device's connection, which it takes over from
// Go's network poller. It returns once every device is done. Each goroutine
// takes every workers-th device, so its devices are in index order, the
// order of their messages at a fixed rate.
func (d *mqttDriver) loadPolled(ctx, hard context.Context) {
	var live []*mqttDevice
	for _, dev := range d.devices {
		fd, err := detach(dev)
		if err != nil {
			d.lose(dev, hard, err)
			continue
		}
		dev.fd = fd
		dev.in = make([]byte, ackBufferSize)
		live = append(live, dev)
	}
	workers := min(runtime.GOMAXPROCS(0), len(live))
	var wg sync.WaitGroup
	for w := range workers {
		var mine []*mqttDevice
		for i := w; i < len(live); i += workers {
			mine = append(mine, live[i])
		}
		wg.Go(func() { d.poll(ctx, hard, mine) })
	}
	wg.Wait()
}

// detach returns a non-blocking duplicate of the device's socket and closes
// the net.Conn, which takes the socket out of Go's poller.
func detach(dev *mqttDevice) (int, error) {
	sc, ok := dev.conn.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	// F_DUPFD_CLOEXEC: a node the bench starts meanwhile must not inherit
	// the socket (and keep it open past the bench's close).
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if errno != 0 {
			derr = errno
			return
		}
		fd = int(r)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	dev.conn.Close()
	dev.conn = nil
	return fd, nil
}

// poll drives devs until each has sent what the schedule gave it and had it
// acknowledged, or has failed.
func (d *mqttDriver) poll(ctx, hard context.Context, devs []*mqttDevice) {
	r := d.r
	k := len(devs[0].slots)
	refill := d.refill()
	fixed := r.sched.fixedRate()
	n := int64(r.opts.Devices)
	dl, hasDL := ctx.Deadline()
	ep, wait, closeEp, err := newEpoll()
	if err != nil {
		for _, dev := range devs {
			d.lose(dev, hard, err)
		}
		return
	}
	defer closeEp()

	active := 0
	done := func(dev *mqttDevice) {
		dev.stopped, dev.finished = true, true
		_ = syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, dev.fd, nil)
		active--
	}
	lose := func(dev *mqttDevice, err error) {
		d.lose(dev, hard, err)
		done(dev)
	}
	// step sends what the device's window has room for, sets how many
	// bytes its next wake-up waits for, and retires it when it is done.
	step := func(dev *mqttDevice) {
		if !dev.stopped && ctx.Err() != nil {
			dev.stopped = true
		}
		if !dev.stopped && k-dev.outstanding >= refill {
			batch := 0
			var sendAt time.Time
			for !dev.slots[dev.sent%int64(k)].busy {
				// At a fixed rate the device's j-th message is the run's
				// message j·devices + index: sent once due, its latency
				// counted from when it was due.
				var due time.Time
				if fixed {
					due = r.sched.due(dev.sent*n + int64(dev.index))
					if hasDL && !due.Before(dl) {
						dev.stopped = true
						break
					}
					if sendAt.IsZero() {
						sendAt = time.Now()
					}
					if due.After(sendAt) {
						break // not yet due
					}
				}
				if _, got := r.sched.claim(1); got == 0 {
					dev.stopped = true
					break
				}
				if sendAt.IsZero() {
					sendAt = time.Now()
				}
				from := sendAt
				if fixed {
					from = due
					d.lag[dev.index%mqttShards].record(sendAt.Sub(due))
				}
				dev.push(from)
				batch++
			}
			if batch > 0 {
				r.sent.Add(int64(batch))
				if err := writeAll(dev.fd, dev.wbuf); err != nil {
					lose(dev, err)
					return
				}
				dev.wbuf = dev.wbuf[:0]
			}
		}
		if dev.stopped && dev.outstanding == 0 {
			done(dev)
			return
		}
		if want := dev.lowat(dev.stopped, refill, dev.inLen); want != dev.lowatSet {
			if err := syscall.SetsockoptInt(dev.fd, syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, want); err != nil {
				lose(dev, err)
				return
			}
			dev.lowatSet = want
		}
	}

	for i, dev := range devs {
		dev.lowatSet = 1
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(i)}
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, dev.fd, &ev); err != nil {
			d.lose(dev, hard, err)
			dev.stopped, dev.finished = true, true
			continue
		}
		active++
		step(dev)
	}

	// At a fixed rate, the cursor walks the schedule of devs in time
	// order — message j of devs[0], of devs[1], …, then j+1 — and steps each
	// device whose message is due, which sends every message of it that is
	// due and fits its window; a device whose window was full sends what it
	// owes when its acks arrive. due returns when the cursor's next message
	// is due, the zero time once the schedule has passed the deadline.
	var cj int64
	var ci int
	due := func(now time.Time) time.Time {
		for {
			at := r.sched.due(cj*n + int64(devs[ci].index))
			if hasDL && !at.Before(dl) {
				return time.Time{}
			}
			if at.After(now) {
				return at
			}
			if dev := devs[ci]; !dev.finished {
				step(dev)
			}
			if ci++; ci == len(devs) {
				ci, cj = 0, cj+1
			}
		}
	}

	events := make([]syscall.EpollEvent, pollEvents)
	stopping := false
	for active > 0 {
		if hard.Err() != nil {
			for _, dev := range devs {
				if !dev.finished {
					lose(dev, hard.Err())
				}
			}
			return
		}
		if !stopping && ctx.Err() != nil {
			// Stop sending everywhere, and wait for each last ack alone.
			stopping = true
			for _, dev := range devs {
				if !dev.finished {
					step(dev)
				}
			}
			continue
		}
		var wake time.Time
		if fixed && !stopping {
			wake = due(time.Now())
		}
		got, err := wait(events, wake)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			for _, dev := range devs {
				if !dev.finished {
					lose(dev, err)
				}
			}
			return
		}
		if got == 0 {
			continue
		}
		now, acked := time.Now(), 0
		for _, ev := range events[:got] {
			dev := devs[ev.Fd]
			if dev.finished {
				continue
			}
			m, err := syscall.Read(dev.fd, dev.in[dev.inLen:])
			if err != nil {
				if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
					continue
				}
				lose(dev, err)
				continue
			}
			if m == 0 {
				lose(dev, errors.New("the broker closed the connection"))
				continue
			}
			buf := dev.in[:dev.inLen+m]
			used, _, err := scanAcks(buf, func(id uint16) {
				if d.puback(dev, id, now) {
					acked++
				}
			})
			if err != nil {
				lose(dev, err)
				continue
			}
			dev.inLen = copy(dev.in, buf[used:])
			if dev.inLen == len(dev.in) {
				lose(dev, errPacketTooLarge)
				continue
			}
			step(dev)
		}
		if acked > 0 {
			r.ack(now, acked)
		}
	}
}

// newEpoll returns an epoll instance and wait, which returns its ready
// events. The instance is itself watched by Go's network poller, so a
// poller goroutine waiting for events holds no thread in a system call
// (which the runtime would hand its processor away from, at a cost); wait
// returns os.ErrDeadlineExceeded after pollTick without events, or at until
// if that is sooner (the zero time: no sooner). An until already past only
// collects the events ready now.
func newEpoll() (ep int, wait func(events []syscall.EpollEvent, until time.Time) (int, error), closeEp func(), err error) {
	ep, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return -1, nil, nil, err
	}
	if err := syscall.SetNonblock(ep, true); err != nil {
		syscall.Close(ep)
		return -1, nil, nil, err
	}
	f := os.NewFile(uintptr(ep), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return -1, nil, nil, err
	}
	var deadline time.Time
	wait = func(events []syscall.EpollEvent, until time.Time) (int, error) {
		now := time.Now()
		if !until.IsZero() && !until.After(now) {
			n, err := syscall.EpollWait(ep, events, 0)
			if errors.Is(err, syscall.EINTR) {
				n, err = 0, nil
			}
			return n, err
		}
		if !now.Before(deadline) || !until.IsZero() && until.Before(deadline) {
			deadline = now.Add(pollTick)
			if !until.IsZero() && until.Before(deadline) {
				deadline = until
			}
			if err := f.SetReadDeadline(deadline); err != nil {
				return 0, err
			}
		}
		var (
			n    int
			werr error
		)
		err := rc.Read(func(uintptr) bool {
			n, werr = syscall.EpollWait(ep, events, 0)
			if errors.Is(werr, syscall.EINTR) {
				n, werr = 0, nil
			}
			return n > 0 || werr != nil
		})
		if err != nil {
			return 0, err
		}
		return n, werr
	}
	return ep, wait, func() { f.Close() }, nil
}

// writeAll writes b to the non-blocking socket fd, waiting out a full send
// buffer (which the small windows of the bench hardly ever meet) for up to
// connectTimeout.
func writeAll(fd int, b []byte) error {
	var waited time.Duration
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		switch {
		case errors.Is(err, syscall.EAGAIN):
			if waited >= connectTimeout {
				return errors.New("the broker reads nothing: send buffer full")
			}
			time.Sleep(time.Millisecond)
			waited += time.Millisecond
		case errors.Is(err, syscall.EINTR):
		case err != nil:
			return err
		default:
			b = b[n:]
		}
	}
	return nil
}

// closeFD says goodbye on a connection loadPolled took over.
func closeFD(fd int) {
	_, _ = syscall.Write(fd, []byte{pktDisconnect, 0})
	_ = syscall.Close(fd)
}
