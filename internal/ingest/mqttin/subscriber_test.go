package mqttin

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

func startMosquitto(t *testing.T) string { return testutil.StartMosquitto(t) }

func newTestSubscriber(t *testing.T, addr, clientID string, app *fakeAppender, m *ingest.Metrics) *Subscriber {
	t.Helper()
	s, err := NewSubscriber(SubscriberOptions{
		BrokerURL:      "tcp://" + addr,
		ClientID:       clientID,
		ConnectTimeout: 5 * time.Second,
		Backoff:        10 * time.Millisecond,
		MaxBackoff:     100 * time.Millisecond,
		Logger:         discardLogger(),
	}, app, m)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	eventually(t, "subscriber connected", s.Connected)
	return s
}

// publishN publishes events first..first+n-1 with QoS 1 and waits for the broker's acks.
func publishN(t *testing.T, c paho3.Client, first, n int) {
	t.Helper()
	toks := make([]paho3.Token, n)
	for i := range n {
		id := first + i
		toks[i] = c.Publish(fmt.Sprintf("devices/dev-%d/temp", id%5), 1, false,
			fmt.Sprintf(`{"value":%d,"id":"e-%d"}`, id, id))
	}
	for _, tok := range toks {
		waitToken(t, tok)
	}
}

// wantStored checks that events 0..n-1 are each stored exactly once.
func wantStored(t *testing.T, app *fakeAppender, n int) {
	t.Helper()
	got := app.stored()
	seen := make(map[string]bool, len(got))
	for _, ev := range got {
		require.False(t, seen[ev.ID], "event %s stored twice", ev.ID)
		seen[ev.ID] = true
		require.Equal(t, fmt.Sprintf("e-%d", int(ev.Value)), ev.ID)
		require.Equal(t, fmt.Sprintf("dev-%d", int(ev.Value)%5), ev.DeviceID)
		require.Equal(t, "temp", ev.Stream)
	}
	for i := range n {
		require.True(t, seen[fmt.Sprintf("e-%d", i)], "event e-%d missing", i)
	}
	require.Len(t, got, n)
}

func TestSubscriberMosquitto(t *testing.T) {
	addr := startMosquitto(t)
	app := newFakeAppender()
	m, _ := newMetrics()
	pub := connectV3(t, v3Options(addr, "device-publisher").SetCleanSession(true))

	const clientID = "holdfast-test"
	sub := newTestSubscriber(t, addr, clientID, app, m)

	// Live traffic.
	publishN(t, pub, 0, 50)
	eventually(t, "50 events", func() bool { return app.count() == 50 })
	wantStored(t, app, 50)

	// A bad payload is acknowledged (never redelivered) and counted.
	waitToken(t, pub.Publish("devices/dev-1/temp", 1, false, "garbage"))
	eventually(t, "rejection counted", func() bool { return rejected(m, "malformed_json") == 1 })

	// Published while holdfast is away: kept by the broker in the persistent session.
	require.NoError(t, sub.Close())
	assert.False(t, sub.Connected())
	publishN(t, pub, 50, 50)
	newTestSubscriber(t, addr, clientID, app, m)
	eventually(t, "100 events", func() bool { return app.count() == 100 })
	wantStored(t, app, 100)

	// Storage fails for a while: nothing is acked, nothing lost; once it recovers,
	// every event is stored once.
	app.setFail(true)
	publishN(t, pub, 100, 50)
	eventually(t, "failed appends", func() bool { return app.failures() >= 10 })
	require.Equal(t, 100, app.count())
	app.setFail(false)
	eventually(t, "150 events", func() bool { return app.count() == 150 })
	wantStored(t, app, 150)

	assert.Equal(t, 1.0, rejected(m, "malformed_json"))
	assert.GreaterOrEqual(t, rejected(m, "unavailable"), 10.0)
	assert.Equal(t, 150.0, accepted(m)-duplicates(m))
	t.Logf("duplicates after reconnects: %v", duplicates(m))
}

// A subscriber whose broker is down keeps retrying and connects once it is up.
func TestSubscriberBrokerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens here now

	app := newFakeAppender()
	s, err := NewSubscriber(SubscriberOptions{
		BrokerURL: "tcp://" + addr, ClientID: "down", Backoff: 5 * time.Millisecond,
		MaxBackoff: 20 * time.Millisecond, Logger: discardLogger(),
	}, app, nil)
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	require.ErrorIs(t, s.Start(context.Background()), ErrStarted)
	assert.False(t, s.Connected())
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
}

func TestSubscriberOptions(t *testing.T) {
	app := newFakeAppender()
	for _, o := range []SubscriberOptions{
		{},
		{BrokerURL: "http://x:1"},
		{BrokerURL: "tcp://"},
		{BrokerURL: "tcp://x:1", MaxPayload: -1},
		{BrokerURL: "tcp://x:1", Backoff: time.Minute, MaxBackoff: time.Second},
	} {
		_, err := NewSubscriber(o, app, nil)
		assert.Error(t, err, "%+v", o)
	}
	s, err := NewSubscriber(SubscriberOptions{BrokerURL: "tcp://x:1"}, app, nil)
	require.NoError(t, err)
	host, _ := os.Hostname()
	assert.Equal(t, "holdfast-"+host, s.opts.ClientID)
	assert.Equal(t, DefaultTopic, s.opts.Topic)
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Start(context.Background()), ErrClosed)
}

// In external mode alerts go to the site's broker: Publish on the subscriber's
// connection reaches another client of a real Mosquitto, once the broker has
// acknowledged it. Without a connection, or to a topic it would ingest, it fails.
func TestSubscriberPublish(t *testing.T) {
	addr := startMosquitto(t)
	app := newFakeAppender()

	idle, err := NewSubscriber(SubscriberOptions{BrokerURL: "tcp://" + addr, Logger: discardLogger()}, app, nil)
	require.NoError(t, err)
	require.ErrorIs(t, idle.Publish("holdfast/alerts/info/x", nil, false, 1), ErrNotConnected)
	require.NoError(t, idle.Close())

	s := newTestSubscriber(t, addr, "holdfast-pub", app, nil)
	got := make(chan paho3.Message, 4)
	w := connectV3(t, v3Options(addr, "watcher").SetCleanSession(true))
	waitToken(t, w.Subscribe("#", 1, func(_ paho3.Client, m paho3.Message) { got <- m }))

	require.NoError(t, s.Publish("holdfast/alerts/critical/hot", []byte(`{"id":"a"}`), false, 1))
	m := recv(t, "alert on the site's broker", got)
	assert.Equal(t, "holdfast/alerts/critical/hot", m.Topic())
	assert.Equal(t, `{"id":"a"}`, string(m.Payload()))

	require.ErrorIs(t, s.Publish("devices/d1/temp", []byte("1"), false, 1), ErrDeviceTopic)
	require.NoError(t, s.Publish("holdfast/alerts/info/marker", nil, false, 1))
	assert.Equal(t, "holdfast/alerts/info/marker", recv(t, "marker", got).Topic(), "devices/ message published")
	assert.Equal(t, 0, app.count())

	// Closed reports the end of the connection's life, from the cancel of
	// Start's context on (the node's stopSub) as well as after Close: the alert
	// notifier then keeps a failed alert for the next start.
	ctx, cancel := context.WithCancel(context.Background())
	stopping, err := NewSubscriber(SubscriberOptions{BrokerURL: "tcp://" + addr, Logger: discardLogger()}, app, nil)
	require.NoError(t, err)
	require.False(t, stopping.Closed())
	require.NoError(t, stopping.Start(ctx))
	require.False(t, stopping.Closed())
	cancel()
	require.True(t, stopping.Closed())
	require.NoError(t, stopping.Close())
	require.True(t, stopping.Closed())
}

func TestMatchFilter(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"devices/+/+", "devices/d1/temp", true},
		{"devices/+/+", "devices/d1", false},
		{"devices/+/+", "devices/d1/temp/x", false},
		{"devices/+/+", "holdfast/alerts/critical/hot", false},
		{"#", "holdfast/alerts/critical/hot", true},
		{"holdfast/#", "holdfast", true},
		{"holdfast/alerts/+/hot", "holdfast/alerts/critical/hot", true},
		{"+/alerts/#", "site/alerts/info/x", true},
		{"#", "$SYS/broker", false},
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
	} {
		assert.Equal(t, tc.want, matchFilter(tc.filter, tc.topic), "%s vs %s", tc.filter, tc.topic)
	}
}
