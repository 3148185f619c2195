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
// On Linux a few poller goroutines drive all the connections
// (mqttpoll_linux.go); elsewhere one goroutine per connection both writes and
// reads: it sends what the window and the schedule allow in one write, then
// reads every PUBACK that has arrived, so there is no hand-off between
// goroutines per message. The wire work is in mqttwire.go.
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

	// On Linux (mqttpoll_linux.go) the connection is a bare non-blocking
	// socket served by a poller goroutine.
	fd       int    // -1 while conn is in use
	in       []byte // bytes read, from the start of an incomplete packet
	inLen    int
	lowatSet int  // the socket's SO_RCVLOWAT
	stopped  bool // sends no more
	finished bool // done: nothing in flight, out of the poller
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
			fd:     -1,
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
	if _, err := c.Write(appendConnect(nil, clientID, false)); err != nil {
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
	if pollable() {
		d.loadPolled(ctx, hard)
		return
	}
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
	lag := &d.lag[shard]
	n := int64(r.opts.Devices)
	dl, hasDL := ctx.Deadline()
	fixed := r.sched.fixedRate()
	refill := d.refill()

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
		if !stamped {
			now, stamped = time.Now(), true
		}
		if d.puback(dev, id, now) {
			got++
		}
	}
	lose := func(err error) { d.lose(dev, hard, err) }

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
			dev.push(from)
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
		if want := dev.lowat(stopped, refill, dev.rd.Buffered()); want != lowat {
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
		err := readAcks(dev.rd, onAck)
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

// batchMinInflight is the least number of messages in flight over all
// devices for which, flat out, acks are batched (see refill).
const batchMinInflight = 5000

// refill returns how many slots of a device's window must be free before it
// is refilled. Flat out with many messages in flight it is half the window:
// the window is refilled in one write, and the kernel wakes the reader once
// that many PUBACKs have arrived (SO_RCVLOWAT), a handful of messages per
// system call rather than one. A broker with Nagle's algorithm on
// (Mosquitto's default) sends a connection's next PUBACK only once its
// previous one is ACKed, which a reader waiting for more delays by the
// kernel's delayed ACK (40 ms): a cap of devices × inflight / 40 ms on
// throughput, harmless from batchMinInflight in flight up (over 100 K/s)
// but not below. So below, as at a fixed rate, each ack is read as it
// arrives and each free slot refilled at once.
func (d *mqttDriver) refill() int {
	o := d.r.opts
	if o.Rate > 0 || o.Devices*o.Inflight < batchMinInflight {
		return 1
	}
	return max(o.Inflight/2, 1)
}

// push encodes the device's next message, its latency to run from from, into
// dev.wbuf and takes its slot in the window. The caller has checked the slot
// is free.
func (dev *mqttDevice) push(from time.Time) {
	j, k := dev.sent, int64(len(dev.slots))
	ts := from.UnixMilli()
	var v float64
	dev.pub.payload, v = dev.appendPayload(dev.pub.payload[:0], ts)
	id := uint16(j%dev.idSpan + 1)
	dev.wbuf = dev.pub.appendPublish(dev.wbuf, id, dev.pub.payload)
	dev.slots[j%k] = mqttSlot{busy: true, id: id, from: from, ts: ts, value: v}
	dev.sent++
	dev.outstanding++
}

// puback completes the message with packet id, acknowledged at now. It
// reports false for an id that is not in flight.
func (d *mqttDriver) puback(dev *mqttDevice, id uint16, now time.Time) bool {
	s := &dev.slots[int64(id-1)%int64(len(dev.slots))]
	if id == 0 || !s.busy || s.id != id {
		d.r.fail("unexpected_puback", 1, fmt.Errorf("PUBACK for packet id %d, not in flight", id))
		return false
	}
	s.busy = false
	dev.outstanding--
	d.ack[dev.index%mqttShards].record(now.Sub(s.from))
	if d.r.opts.onAck != nil {
		d.r.opts.onAck(dev.id, s.ts, s.value)
	}
	return true
}

// lose counts what the device still has in flight as failed.
func (d *mqttDriver) lose(dev *mqttDevice, hard context.Context, err error) {
	if hard.Err() != nil {
		if dev.outstanding > 0 {
			d.r.fail("timeout", dev.outstanding, errors.New("no PUBACK before the drain timeout"))
		}
	} else {
		d.r.fail("connection_lost", 1, err)
		if dev.outstanding > 0 {
			d.r.fail("publish_failed", dev.outstanding, err)
		}
	}
	dev.outstanding = 0
}

// lowat returns the SO_RCVLOWAT for the device's next wait: flat out, the
// bytes of the PUBACKs still needed to free refill slots, less any part of
// one already buffered; else 1, every ack as it comes.
func (dev *mqttDevice) lowat(stopped bool, refill, buffered int) int {
	if stopped || refill <= 1 || dev.outstanding < refill {
		return 1
	}
	free := len(dev.slots) - dev.outstanding
	return max(4*(refill-free)-buffered, 1)
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
		if dev.fd >= 0 {
			closeFD(dev.fd)
			dev.fd = -1
		}
		if dev.conn != nil {
			dev.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			dev.conn.Write([]byte{pktDisconnect, 0})
			dev.conn.Close()
		}
	}
}
