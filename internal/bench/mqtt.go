package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

const (
	connectParallel = 64 // MQTT connections opened at once
	connectTimeout  = 30 * time.Second
	mqttShards      = 16 // latency histograms shared by devices
)

// mqttDriver gives every device its own MQTT 3.1.1 connection and publishes
// each device's events in order at QoS 1 with up to Inflight unacknowledged.
type mqttDriver struct {
	r       *run
	broker  string
	devices []*mqttDevice
	ack     [mqttShards]histogram
	lag     [mqttShards]histogram
}

type mqttDevice struct {
	*device
	client mqtt.Client
	lost   atomic.Bool // the connection was lost: stop publishing
}

// inflight is a published message waiting for its PUBACK.
type inflight struct {
	tok   mqtt.Token
	from  time.Time // latency runs from here: when it was due, or sent
	ts    int64
	value float64
}

func newMQTTDriver(r *run, addr string) *mqttDriver {
	d := &mqttDriver{r: r, broker: "tcp://" + addr}
	for _, dev := range newDevices(r.opts.Devices) {
		d.devices = append(d.devices, &mqttDevice{device: dev})
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
			o := mqtt.NewClientOptions().
				AddBroker(d.broker).
				SetClientID(prefix + dev.id).
				SetCleanSession(true).
				SetAutoReconnect(false).
				SetConnectRetry(false).
				SetConnectTimeout(connectTimeout).
				SetKeepAlive(time.Minute).
				SetCustomOpenConnectionFn(dialBuffered).
				SetConnectionLostHandler(func(_ mqtt.Client, err error) {
					dev.lost.Store(true)
					d.r.fail("connection_lost", 1, err)
				})
			c := mqtt.NewClient(o)
			tok := c.Connect()
			var err error
			if !tok.WaitTimeout(connectTimeout) {
				err = errors.New("timed out")
			} else {
				err = tok.Error()
			}
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", dev.id, err)
				}
				mu.Unlock()
				return
			}
			dev.client = c
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// dialBuffered connects to the broker through a read buffer. paho reads each
// packet's fixed header a byte at a time; unbuffered, a PUBACK costs three read
// system calls where one will do, and the bench would take CPU from the node
// it is measuring.
func dialBuffered(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", uri.Host, connectTimeout)
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, 512)}, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (d *mqttDriver) load(ctx, hard context.Context) {
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
	k := r.opts.Inflight
	shard := dev.index % mqttShards
	ack, lag := &d.ack[shard], &d.lag[shard]
	bufs := make([][]byte, k)       // payload of message j is bufs[j%k]: paho does not copy it
	slots := make(chan struct{}, k) // one per unacknowledged message
	pending := make(chan inflight, k)

	done := make(chan struct{})
	go func() { // completes messages in order, as the broker acknowledges them
		defer close(done)
		for m := range pending {
			select {
			case <-m.tok.Done():
			case <-hard.Done():
				r.fail("timeout", 1, errors.New("no PUBACK before the drain timeout"))
				<-slots
				continue
			}
			now := time.Now()
			if err := m.tok.Error(); err != nil {
				dev.lost.Store(true)
				r.fail("publish_failed", 1, err)
			} else {
				ack.record(now.Sub(m.from))
				r.ack(now, 1)
				if r.opts.onAck != nil {
					r.opts.onAck(dev.id, m.ts, m.value)
				}
			}
			<-slots
		}
	}()
	defer func() {
		close(pending)
		<-done
	}()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	n := int64(r.opts.Devices)
	for j := int64(0); ctx.Err() == nil && !dev.lost.Load(); j++ {
		if _, got := r.sched.claim(1); got == 0 {
			return
		}
		due := r.sched.due(j*n + int64(dev.index))
		if dl, ok := ctx.Deadline(); ok && !due.IsZero() && !due.Before(dl) {
			return
		}
		if !sleepUntil(ctx, timer, due) {
			return
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		now := time.Now()
		from := now
		if !due.IsZero() {
			from = due
			lag.record(now.Sub(due))
		}
		ts := from.UnixMilli()
		var v float64
		b := bufs[j%int64(k)][:0]
		b, v = dev.appendPayload(b, ts)
		bufs[j%int64(k)] = b
		tok := dev.client.Publish(dev.topic, 1, false, b)
		r.sent.Add(1)
		pending <- inflight{tok: tok, from: from, ts: ts, value: v}
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
	var wg sync.WaitGroup
	for _, dev := range d.devices {
		if dev.client != nil {
			wg.Go(func() { dev.client.Disconnect(100) })
		}
	}
	wg.Wait()
}
