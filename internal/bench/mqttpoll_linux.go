package bench

// Flat out on Linux, the MQTT load is driven by a few goroutines that each
// watch many connections through their own epoll instance, instead of one
// goroutine per connection parked in Go's network poller. Each wake-up then
// serves every connection with acks waiting, a connection is read only when
// it has the PUBACKs its window is waiting for (SO_RCVLOWAT, level
// triggered: no read that finds nothing), and no goroutine is parked and
// woken per batch. It is written by hand for the same reason as mqttwire.go:
// the generator's CPU is taken from the broker it measures.

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

// pollable reports whether the flat-out load can be driven by epoll.
func pollable() bool { return true }

// loadPolled sends flat out over every device's connection, which it takes
// over from Go's network poller. It returns once every device is done.
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
			for !dev.slots[dev.sent%int64(k)].busy {
				if _, got := r.sched.claim(1); got == 0 {
					dev.stopped = true
					break
				}
				if batch == 0 {
					dev.sendAt = time.Now()
				}
				dev.push(dev.sendAt)
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
		n, err := wait(events)
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
		if n == 0 {
			continue
		}
		now, acked := time.Now(), 0
		for _, ev := range events[:n] {
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
// returns os.ErrDeadlineExceeded after pollTick without events.
func newEpoll() (ep int, wait func([]syscall.EpollEvent) (int, error), closeEp func(), err error) {
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
	wait = func(events []syscall.EpollEvent) (int, error) {
		if now := time.Now(); !now.Before(deadline) {
			deadline = now.Add(pollTick)
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
