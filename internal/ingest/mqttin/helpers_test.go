package mqttin

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	htu "github.com/holdfast-edge/holdfast/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor is how long a test waits for something that should happen promptly.
const waitFor = 30 * time.Second

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	htu.Eventually(t, what, cond)
}

// recv waits for a value on ch.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// fakeAppender stands in for the buffer: it records events, drops retries of ids
// already stored (like the real Appender), and can be made to block or fail.
// A failed or abandoned Append records nothing.
type fakeAppender struct {
	mu      sync.Mutex
	events  []event.Event   // guarded by mu
	seen    map[string]bool // device_id + id of stored events; guarded by mu
	calls   int             // guarded by mu
	fails   int             // failed calls; guarded by mu
	fail    bool            // guarded by mu
	gate    chan struct{}   // if set, Append waits for it to close; guarded by mu
	entered chan struct{}   // signalled when an Append starts waiting at the gate
	notify  chan struct{}   // signalled after every Append
}

func newFakeAppender() *fakeAppender {
	return &fakeAppender{
		seen:    make(map[string]bool),
		entered: make(chan struct{}, 1),
		notify:  make(chan struct{}, 1),
	}
}

func (f *fakeAppender) Append(ctx context.Context, evs []event.Event) (ingest.Result, error) {
	f.mu.Lock()
	f.calls++
	gate := f.gate
	f.mu.Unlock()
	defer func() {
		select {
		case f.notify <- struct{}{}:
		default:
		}
	}()
	if gate != nil {
		select {
		case f.entered <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return ingest.Result{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		f.fails++
		return ingest.Result{}, fmt.Errorf("append: %w", ingest.ErrUnavailable)
	}
	var res ingest.Result
	for _, ev := range evs {
		if ev.ID != "" {
			k := ev.DeviceID + "\x00" + ev.ID
			if f.seen[k] {
				res.Duplicates++
				continue
			}
			f.seen[k] = true
		}
		f.events = append(f.events, ev)
		res.Stored++
	}
	return res, nil
}

// block makes Appends wait until the returned function is called.
func (f *fakeAppender) block() (release func()) {
	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			f.gate = nil
			f.mu.Unlock()
			close(gate)
		})
	}
}

func (f *fakeAppender) setFail(fail bool) {
	f.mu.Lock()
	f.fail = fail
	f.mu.Unlock()
}

func (f *fakeAppender) stored() []event.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]event.Event(nil), f.events...)
}

func (f *fakeAppender) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.events)
}

func (f *fakeAppender) failures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fails
}

// eventKeys returns "device/stream/id" for every stored event, sorted.
func eventKeys(evs []event.Event) []string {
	keys := make([]string, len(evs))
	for i, ev := range evs {
		keys[i] = ev.DeviceID + "/" + ev.Stream + "/" + ev.ID
	}
	sort.Strings(keys)
	return keys
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newMetrics() (*ingest.Metrics, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return ingest.NewMetrics(reg), reg
}

func rejected(m *ingest.Metrics, reason string) float64 {
	return testutil.ToFloat64(m.Rejected.WithLabelValues(transport, reason))
}

func duplicates(m *ingest.Metrics) float64 {
	return testutil.ToFloat64(m.Duplicates.WithLabelValues(transport))
}

func accepted(m *ingest.Metrics) float64 {
	return testutil.ToFloat64(m.Accepted.WithLabelValues(transport))
}

// startBroker starts an embedded broker on a free port and closes it at the end of the test.
func startBroker(t *testing.T, app ingest.Appender, m *ingest.Metrics, opts BrokerOptions) *Broker {
	t.Helper()
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	b, err := NewBroker(opts, app, m)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

// v3Options are paho.mqtt.golang options for an MQTT 3.1.1 test client.
func v3Options(addr, clientID string) *paho3.ClientOptions {
	return paho3.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second)
}

// connectV3 connects an MQTT 3.1.1 client and disconnects it at the end of the test.
func connectV3(t *testing.T, opts *paho3.ClientOptions) paho3.Client {
	t.Helper()
	c := paho3.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor), "connect timed out")
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// waitToken waits for a paho.mqtt.golang token and requires success.
func waitToken(t *testing.T, tok paho3.Token) {
	t.Helper()
	require.True(t, tok.WaitTimeout(waitFor), "token timed out")
	require.NoError(t, tok.Error())
}

// connectV5 connects an MQTT 5 client (paho.golang) and disconnects it at the end of the test.
func connectV5(t *testing.T, addr, clientID string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: waitFor})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	require.Equal(t, byte(0), ca.ReasonCode)
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		select {
		case <-c.Done():
		case <-time.After(waitFor):
			t.Error("v5 client did not shut down")
		}
	})
	return c
}

// publishV5 publishes with QoS 1 and returns the PUBACK reason code.
func publishV5(t *testing.T, c *paho.Client, topic string, payload []byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if pr == nil {
		require.NoError(t, err)
		t.Fatal("no publish response")
	}
	return pr.ReasonCode
}
