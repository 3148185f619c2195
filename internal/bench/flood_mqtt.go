package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-edge/holdfast/internal/clock"
)

// The MQTT side of `holdfast bench flood`: the normal devices and the
// flooder publish QoS 1 over their own connections, in MQTT 3.1.1 or 5
// (--mqtt-version), one event per message on devices/{id}/telemetry. Over
// its limit, an MQTT 5 message is answered PUBACK 0x97 (quota exceeded) and
// not stored; an MQTT 3.1.1 one, which has no negative ack, is held until
// the device is back under its limit, so the flooder is slowed by its own
// window of messages in flight filling up. The wire is written by hand, as
// the ingest generator's is (mqttwire.go): 3.1.1 with its helpers, 5 with
// the few bytes it adds (protocol level 5, empty property lists, PUBACK
// reason codes).

// floodWindow is the flooder's messages in flight per connection: when
// that many are unacknowledged it sends no more until acks come back (a
// device's client would block the same way).
const floodWindow = 100

// reasonQuotaExceeded is MQTT 5's PUBACK reason for a message over its
// device's rate limit.
const reasonQuotaExceeded = 0x97

// floodMQTT is one MQTT connection of bench flood.
type floodMQTT struct {
	conn net.Conn
	br   *bufio.Reader
	v5   bool
	pub  *publisher
	id   uint16
	wbuf []byte
	seq  int
	dev  string
	// A flooder's: its window of messages in flight (a slot per message
	// sent, freed by its PUBACK) and the tally its acks count to.
	slots chan struct{}
	tally atomic.Pointer[floodTally]
}

// dialFloodMQTT connects as clientID and publishes for device.
func dialFloodMQTT(ctx context.Context, addr, clientID, device string, version int) (*floodMQTT, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &floodMQTT{conn: conn, br: bufio.NewReaderSize(conn, 4096), v5: version == 5,
		pub: newPublisher("devices/" + device + "/telemetry"), dev: device}
	c.pub.v5 = c.v5
	pkt := appendConnect(nil, clientID, c.v5)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(pkt); err != nil {
		conn.Close()
		return nil, err
	}
	typ, body, err := c.readPacket()
	if err == nil && typ != pktConnack {
		err = fmt.Errorf("not a CONNACK: packet type %#x", typ)
	}
	if err == nil && (len(body) < 2 || body[1] != 0) {
		err = fmt.Errorf("connection refused: % x", body)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect %s: %w", clientID, err)
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

// readPacket reads one packet: its type byte and its body. The fixed
// header is decoded by packetSize, as the ingest generator's reader does.
func (c *floodMQTT) readPacket() (byte, []byte, error) {
	for n := 2; ; n++ { // until the fixed header is whole: n is then its length
		head, err := c.br.Peek(n)
		if err != nil {
			return 0, nil, err
		}
		size, ok, err := packetSize(head)
		if err != nil {
			return 0, nil, err
		}
		if ok {
			pkt := make([]byte, size)
			if _, err := io.ReadFull(c.br, pkt); err != nil {
				return 0, nil, err
			}
			return pkt[0], pkt[n:], nil
		}
	}
}

// readAck reads packets up to the next PUBACK and returns its reason code
// (0 for success; 3.1.1 has none).
func (c *floodMQTT) readAck() (byte, error) {
	for {
		typ, body, err := c.readPacket()
		if err != nil {
			return 0, err
		}
		if typ&0xf0 != pktPuback {
			continue
		}
		if len(body) < 2 {
			return 0, fmt.Errorf("short PUBACK: % x", body)
		}
		if c.v5 && len(body) >= 3 {
			return body[2], nil
		}
		return 0, nil
	}
}

// appendPublish appends the device's next event as a QoS 1 PUBLISH.
func (c *floodMQTT) appendPublish(dst []byte) []byte {
	c.seq++
	c.id++
	if c.id == 0 {
		c.id = 1
	}
	p := c.pub.payload[:0]
	p = append(p, `{"id":"`...)
	p = append(p, c.dev...)
	p = append(p, '-')
	p = strconv.AppendInt(p, int64(c.seq), 10)
	p = append(p, `","ts":`...)
	p = strconv.AppendInt(p, time.Now().UnixMilli(), 10)
	p = append(p, `,"value":`...)
	p = strconv.AppendInt(p, int64(c.seq), 10)
	p = append(p, '}')
	c.pub.payload = p
	return c.pub.appendPublish(dst, c.id, p)
}

// publishBatch sends n messages in one write and waits for their n
// PUBACKs; it returns how many were accepted (reason below 0x80).
func (c *floodMQTT) publishBatch(n int) (accepted int, err error) {
	c.wbuf = c.wbuf[:0]
	for range n {
		c.wbuf = c.appendPublish(c.wbuf)
	}
	if _, err := c.conn.Write(c.wbuf); err != nil {
		return 0, err
	}
	for range n {
		reason, err := c.readAck()
		if err != nil {
			return accepted, err
		}
		if reason < 0x80 {
			accepted++
		}
	}
	return accepted, nil
}

// floodPhaseMQTT plays one phase over MQTT, as floodPhase does over HTTP:
// every normal device publishes a batch of messages every Batch/EventRate
// on a fixed schedule, and latency runs from the batch's due time to its
// last PUBACK; with flood, the flooder's connections publish at
// Factor×DeviceRate, each with at most floodWindow messages in flight.
func floodPhaseMQTT(ctx context.Context, devs []*floodMQTT, flooders []*floodMQTT, o FloodOptions, flood bool, tally *floodTally) error {
	ctx, cancel := context.WithTimeout(ctx, o.Phase)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	playNormal(ctx, &wg, start, len(devs), o, tally, func(i int, _ *int) (int, string, bool) {
		accepted, err := devs[i].publishBatch(o.Batch)
		switch {
		case err != nil:
			return accepted, "error", true
		case accepted < o.Batch:
			return accepted, "refused", false
		}
		return accepted, "", false
	})
	var floodErr error
	var errMu sync.Mutex
	if flood {
		floodEvery := time.Duration(float64(len(flooders)) / (o.Factor * o.DeviceRate) * float64(time.Second))
		for c, f := range flooders {
			f.tally.Store(tally)
			wg.Go(func() {
				var buf []byte
				for due := start.Add(floodEvery * time.Duration(c) / time.Duration(len(flooders))); ; due = due.Add(floodEvery) {
					if !clock.Sleep(ctx, time.Until(due)) {
						return
					}
					tally.floodDue.Add(1)
					select {
					case f.slots <- struct{}{}:
					default:
						continue // the window is full: this message is not sent
					}
					buf = f.appendPublish(buf[:0])
					if _, err := f.conn.Write(buf); err != nil {
						errMu.Lock()
						floodErr = err
						errMu.Unlock()
						return
					}
					tally.floodSent.Add(1)
				}
			})
		}
	}
	wg.Wait()
	tally.seconds += o.Phase.Seconds()
	if flood {
		// Wait for the acks of what is still in flight (an MQTT 3.1.1
		// message is held at most mqttin.DefaultMaxHold), so that the
		// next phase starts with empty windows; they count to this one.
		deadline := time.Now().Add(15 * time.Second)
		for _, f := range flooders {
			for len(f.slots) > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if n := len(f.slots); n > 0 && floodErr == nil {
				floodErr = fmt.Errorf("%d messages not acknowledged 15 s after the phase", n)
			}
		}
	}
	if floodErr != nil {
		return fmt.Errorf("flooder: %w", floodErr)
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// readAcks counts the flooder's PUBACKs into the phase's tally and frees
// their slots in the window, until the connection closes.
func (c *floodMQTT) readAcks() {
	for {
		reason, err := c.readAck()
		if err != nil {
			return
		}
		t := c.tally.Load()
		switch {
		case reason < 0x80:
			t.floodAcc.Add(1)
		case reason == reasonQuotaExceeded:
			t.flood429.Add(1)
		}
		<-c.slots
	}
}

// floodConns is the flooder's connections (each its own client id, all one
// device): four, so that its rate holds while acks take longer than its
// interval, as over HTTP.
const floodConns = 4

// runFloodMQTT connects the devices and the flooder to the node's MQTT
// listener and plays the phases.
func runFloodMQTT(ctx context.Context, addr string, o FloodOptions) (*FloodReport, error) {
	var conns []*floodMQTT
	defer func() {
		for _, c := range conns {
			c.conn.Close()
		}
	}()
	devs := make([]*floodMQTT, o.Devices)
	for i := range devs {
		dev := fmt.Sprintf("device-%04d", i)
		c, err := dialFloodMQTT(ctx, addr, dev, dev, o.MQTTVersion)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		devs[i] = c
	}
	flooders := make([]*floodMQTT, floodConns)
	for i := range flooders {
		c, err := dialFloodMQTT(ctx, addr, fmt.Sprintf("flooder-%d", i), "flooder", o.MQTTVersion)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		c.seq = i * 1_000_000_000
		c.slots = make(chan struct{}, floodWindow)
		c.tally.Store(new(floodTally))
		go c.readAcks()
		flooders[i] = c
	}
	return playFlood(o, func(o FloodOptions, flood bool, tally *floodTally) error {
		return floodPhaseMQTT(ctx, devs, flooders, o, flood, tally)
	})
}
