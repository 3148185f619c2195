package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

const (
	connectParallel = 64 // MQTT connections opened at once
	connectTimeout  = 30 * time.Second
	mqttShards      = 16   // latency histograms shared by devices
	ackBufferSize   = 1024 // per connection: up to 256 PUBACKs per read
)

// mqttDriver gives every device its own MQTT 3.1.1 connection and publishes
// each device's events in order at QoS 1 with up to Inflight unacknowledged.
// One goroutine per connection both writes and reads: it sends what the window
// and the schedule allow in one write, then reads every PUBACK that has
// arrived, so there is no hand-off between goroutines per message. The wire
// work is in mqttwire.go.
type mqttDriver struct {
	r       *run
	addr    string
	devices []*mqttDevice
	ack     [mqttShards]histogram
	lag     [mqttShards]histogram
}

type mqttDevice struct {
	*device
	conn net.Conn
	rd   *bufio.Reader
	pub  *publisher
	wbuf []byte

	// The window: message j uses slot j % Inflight and packet id
	// j % idSpan + 1, so an id names its slot. A slot is reused only once
	// its message is acknowledged, so acks out of order are safe.
	slots       []mqttSlot
	idSpan      int64
	sent        int64 // messages written so far
	outstanding int   // messages awaiting PUBACK
}

// mqttSlot is a published message waiting for its PUBACK.
type mqttSlot struct {
	busy  bool
	id    uint16
	from  time.Time // latency runs from here: when it was due, or sent
	ts    int64
	value float64
}

func newMQTTDriver(r *run, addr string) *mqttDriver {
	d := &mqttDriver{r: r, addr: addr}
	k := r.opts.Inflight
	for _, dev := range newDevices(r.opts.Devices) {
		d.devices = append(d.devices, &mqttDevice{
			device: dev,
			pub:    newPublisher(dev.topic),
			wbuf:   make([]byte, 0, k*96),
			slots:  make([]mqttSlot, k),
			idSpan: int64(k * (0xffff / k)),
		})
	}
	return d
}

// connect opens every device's connection, a few at a time.
func (d *mqttDriver) connect(ctx context.Context) error {
	prefix := fmt.Sprintf("bench-%d-", os.Getpid())
	sem := make(chan struct{}, connectParallel)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, dev := range d.devices {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := dev.dial(ctx, d.addr, prefix+dev.id); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", dev.id, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// dial connects and completes the MQTT handshake.
func (dev *mqttDevice) dial(ctx context.Context, addr, clientID string) error {
	dl := net.Dialer{Timeout: connectTimeout}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		c.Close()
		return err
	}
	if err := c.SetDeadline(time.Now().Add(connectTimeout)); err != nil {
		return fail(err)
	}
	if _, err := c.Write(appendConnect(nil, clientID)); err != nil {
		return fail(err)
	}
	rd := bufio.NewReaderSize(c, ackBufferSize)
	p, err := rd.Peek(4)
	if err != nil {
		return fail(fmt.Errorf("no CONNACK: %w", err))
	}
	if err := connackError(p); err != nil {
		return fail(err)
	}
	if _, err := rd.Discard(4); err != nil {
		return fail(err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return fail(err)
	}
	dev.conn, dev.rd = c, rd
	return nil
}

func (d *mqttDriver) load(ctx, hard context.Context) {
	// Once hard is done, outstanding messages are abandoned: closing the
	// connections ends the reads waiting for them.
	stop := context.AfterFunc(hard, func() {
		for _, dev := range d.devices {
			if dev.conn != nil {
				dev.conn.Close()
			}
		}
	})
	defer stop()
	var wg sync.WaitGroup
	for _, dev := range d.devices {
		wg.Go(func() { d.publish(ctx, hard, dev) })
	}
	wg.Wait()
}

// publish sends the device's events until the schedule runs out or ctx is
// done, and returns once each has been acknowledged or has failed. At a fixed
// rate the device's j-th event is the run's event j·devices + index, so the
// devices' sends interleave evenly.
func (d *mqttDriver) publish(ctx, hard context.Context, dev *mqttDevice) {
	r := d.r
	k := int64(len(dev.slots))
	shard := dev.index % mqttShards
	ack, lag := &d.ack[shard], &d.lag[shard]
	n := int64(r.opts.Devices)
	dl, hasDL := ctx.Deadline()
	fixed := r.sched.fixedRate()
	// Flat out, the window is refilled once half of it is free, in one
	// write, and the kernel wakes the reader once that many PUBACKs have
	// arrived (SO_RCVLOWAT): a handful of messages per system call rather
	// than one. At a fixed rate each message goes when it is due and each
	// ack is read as it arrives.
	refill := 1
	if !fixed {
		refill = max(int(k)/2, 1)
	}

	var (
		stopped  bool      // no more sends
		claimed  bool      // the next message is claimed from the schedule
		due      time.Time // when the claimed message is due; zero: now
		deadline time.Time // the connection's read deadline
		lowat    = 1       // the connection's SO_RCVLOWAT
		now      time.Time // when the acks being read arrived
		stamped  bool      // now is set for this read
		got      int       // acks matched in this read
	)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()

	onAck := func(id uint16) {
		s := &dev.slots[int64(id-1)%k]
		if !s.busy || s.id != id {
			r.fail("unexpected_puback", 1, fmt.Errorf("PUBACK for packet id %d, not in flight", id))
			return
		}
		s.busy = false
		dev.outstanding--
		if !stamped {
			now, stamped = time.Now(), true
		}
		got++
		ack.record(now.Sub(s.from))
		if r.opts.onAck != nil {
			r.opts.onAck(dev.id, s.ts, s.value)
		}
	}
	// lose counts what is still in flight as failed and stops the device.
	lose := func(err error) {
		if hard.Err() != nil {
			r.fail("timeout", dev.outstanding, errors.New("no PUBACK before the drain timeout"))
		} else {
			r.fail("connection_lost", 1, err)
			if dev.outstanding > 0 {
				r.fail("publish_failed", dev.outstanding, err)
			}
		}
		dev.outstanding = 0
	}

	for {
		// Send what the window and the schedule allow, in one write.
		if !stopped && ctx.Err() != nil {
			stopped = true
		}
		sendAt, batch := time.Time{}, 0
		for !stopped && !dev.slots[dev.sent%k].busy && (batch > 0 || int(k)-dev.outstanding >= refill) {
			j := dev.sent
			if !claimed {
				if _, got := r.sched.claim(1); got == 0 {
					stopped = true
					break
				}
				claimed = true
				due = r.sched.due(j*n + int64(dev.index))
				if hasDL && !due.IsZero() && !due.Before(dl) {
					stopped = true
					break
				}
			}
			if sendAt.IsZero() {
				sendAt = time.Now()
			}
			if !due.IsZero() && due.After(sendAt) {
				break // not yet due
			}
			claimed = false
			from := sendAt
			if fixed {
				from = due
				lag.record(sendAt.Sub(due))
			}
			ts := from.UnixMilli()
			var v float64
			dev.pub.payload, v = dev.appendPayload(dev.pub.payload[:0], ts)
			id := uint16(j%dev.idSpan + 1)
			dev.wbuf = dev.pub.appendPublish(dev.wbuf, id, dev.pub.payload)
			dev.slots[j%k] = mqttSlot{busy: true, id: id, from: from, ts: ts, value: v}
			dev.sent++
			dev.outstanding++
			batch++
		}
		if len(dev.wbuf) > 0 {
			_, err := dev.conn.Write(dev.wbuf)
			dev.wbuf = dev.wbuf[:0]
			r.sent.Add(int64(batch))
			if err != nil {
				stopped = true
				lose(err)
				return
			}
		}
		if stopped && dev.outstanding == 0 {
			return
		}

		// Wait: for acks, and for the next message's due time if the window
		// has room for it.
		wake := time.Time{}
		if !stopped && claimed && !due.IsZero() && !dev.slots[dev.sent%k].busy {
			wake = due
		}
		if dev.outstanding == 0 {
			if !sleepUntil(ctx, timer, wake) {
				stopped = true
			}
			continue
		}
		want := 1
		if !stopped && dev.outstanding >= refill {
			// Bytes of the PUBACKs still needed to free refill slots, less
			// any part of one already buffered.
			want = max(4*(refill-(int(k)-dev.outstanding))-dev.rd.Buffered(), 1)
		}
		if want != lowat {
			if err := setRcvLowat(dev.conn, want); err != nil {
				lose(err)
				return
			}
			lowat = want
		}
		if !wake.Equal(deadline) {
			if err := dev.conn.SetReadDeadline(wake); err != nil {
				lose(err)
				return
			}
			deadline = wake
		}
		stamped, got = false, 0
		_, err := readAcks(dev.rd, onAck)
		if got > 0 {
			r.ack(now, got)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && hard.Err() == nil {
				continue
			}
			lose(err)
			return
		}
	}
}

func (d *mqttDriver) latency() (ack, lag *histogram) {
	ack, lag = new(histogram), new(histogram)
	for i := range d.ack {
		ack.merge(&d.ack[i])
		lag.merge(&d.lag[i])
	}
	return ack, lag
}

// close disconnects every device.
func (d *mqttDriver) close() {
	for _, dev := range d.devices {
		if dev.conn != nil {
			dev.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			dev.conn.Write([]byte{pktDisconnect, 0})
			dev.conn.Close()
		}
	}
}
