package mqttin

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pressure"
)

func TestBrokerOptions(t *testing.T) {
	app := newFakeAppender()
	_, err := NewBroker(BrokerOptions{MaxPayload: -1}, app, nil)
	require.Error(t, err)
	_, err = NewBroker(BrokerOptions{Addr: "no-port"}, app, nil)
	require.Error(t, err)
	_, err = NewBroker(BrokerOptions{}, nil, nil)
	require.Error(t, err)

	b, err := NewBroker(BrokerOptions{Logger: discardLogger()}, app, nil)
	require.NoError(t, err)
	assert.Equal(t, DefaultAddr, b.Addr())
	require.NoError(t, b.Close())
	require.ErrorIs(t, b.Start(), ErrClosed)
	require.NoError(t, b.Close())
}

func TestBrokerStartTwice(t *testing.T) {
	b := startBroker(t, newFakeAppender(), nil, BrokerOptions{})
	require.ErrorIs(t, b.Start(), ErrStarted)
	assert.NotContains(t, b.Addr(), ":0")

	// The address is taken: Start fails, Close still cleans up.
	b2, err := NewBroker(BrokerOptions{Addr: b.Addr(), Logger: discardLogger()}, newFakeAppender(), nil)
	require.NoError(t, err)
	require.Error(t, b2.Start())
	require.NoError(t, b2.Close())
}

// The QoS 1 PUBACK and QoS 2 PUBREC leave only after Append has returned.
func TestBrokerAckWaitsForDurability(t *testing.T) {
	app := newFakeAppender()
	b := startBroker(t, app, nil, BrokerOptions{})

	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v3.1.1 QoS %d", qos), func(t *testing.T) {
			c := connectV3(t, v3Options(b.Addr(), fmt.Sprintf("ackwait-v3-q%d", qos)))
			before := app.count()
			release := app.block()
			defer release()

			tok := c.Publish("devices/dev-1/temp", qos, false, "21.5")
			recv(t, "Append to start", app.entered)
			select {
			case <-tok.Done():
				t.Fatal("publish acknowledged while Append was still blocked")
			default:
			}
			assert.Equal(t, before, app.count())

			release()
			waitToken(t, tok)
			require.Equal(t, before+1, app.count())
		})
	}

	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v5 QoS %d", qos), func(t *testing.T) {
			c := connectV5(t, b.Addr(), fmt.Sprintf("ackwait-v5-q%d", qos))
			before := app.count()
			release := app.block()
			defer release()

			done := make(chan byte, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				pr, err := c.Publish(ctx, &paho.Publish{Topic: "devices/dev-2/temp", QoS: qos, Payload: []byte("7")})
				if err != nil || pr == nil {
					done <- 0xff
					return
				}
				done <- pr.ReasonCode
			}()
			recv(t, "Append to start", app.entered)
			select {
			case <-done:
				t.Fatal("publish acknowledged while Append was still blocked")
			default:
			}

			release()
			assert.Equal(t, byte(0), recv(t, "acknowledgement", done))
			require.Equal(t, before+1, app.count())
		})
	}
}

// A QoS 2 publish refused for its payload gets a PUBREC with the reason code.
func TestBrokerRejectQoS2V5(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	b := startBroker(t, app, m, BrokerOptions{})
	c := connectV5(t, b.Addr(), "qos2-v5")
	for _, tc := range []struct {
		topic, payload string
		code           byte
	}{
		{"devices/d1/temp", "{", 0x99},
		{"devices/d1/temp/x", "1", 0x90},
		{"devices/d1/temp", "3", 0},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		pr, err := c.Publish(ctx, &paho.Publish{Topic: tc.topic, QoS: 2, Payload: []byte(tc.payload)})
		cancel()
		require.NoError(t, err)
		assert.Equal(t, tc.code, pr.ReasonCode, "%s %q", tc.topic, tc.payload)
	}
	assert.Equal(t, 1, app.count())
	assert.Equal(t, 1.0, rejected(m, "malformed_json"))
	assert.Equal(t, 1.0, rejected(m, "bad_topic"))
}

// Many clients publishing at once: every acknowledged event is stored exactly once,
// with what was published.
func TestBrokerConcurrentClients(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	b := startBroker(t, app, m, BrokerOptions{})

	const clients, perClient = 24, 40
	base := time.Now().Add(-time.Hour).UnixMilli()
	type want struct {
		ts    int64
		value float64
	}
	expect := make(map[string]want) // device/stream/id
	for c := range clients {
		for i := range perClient {
			dev := fmt.Sprintf("dev-%02d", c)
			stream := []string{"temp", "humidity"}[i%2]
			expect[fmt.Sprintf("%s/%s/m-%d", dev, stream, i)] = want{ts: base + int64(c*1000+i), value: float64(c) + float64(i)/8}
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		dev := fmt.Sprintf("dev-%02d", c)
		payload := func(i int) (string, []byte) {
			stream := []string{"temp", "humidity"}[i%2]
			w := expect[fmt.Sprintf("%s/%s/m-%d", dev, stream, i)]
			return "devices/" + dev + "/" + stream,
				fmt.Appendf(nil, `{"ts":%d,"value":%v,"id":"m-%d","tags":{"client":"%d"}}`, w.ts, w.value, i, c)
		}
		if c%3 == 0 { // a third of the clients speak MQTT 5
			v5 := connectV5(t, b.Addr(), "many-"+dev)
			wg.Go(func() {
				for i := range perClient {
					topic, p := payload(i)
					ctx, cancel := context.WithTimeout(context.Background(), waitFor)
					pr, err := v5.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: p})
					cancel()
					if err != nil || pr.ReasonCode != 0 {
						errs <- fmt.Errorf("%s: publish %d: %v", dev, i, err)
						return
					}
				}
			})
			continue
		}
		v3 := connectV3(t, v3Options(b.Addr(), "many-"+dev))
		wg.Go(func() {
			toks := make([]paho3.Token, perClient)
			for i := range perClient { // all in flight at once
				topic, p := payload(i)
				toks[i] = v3.Publish(topic, 1, false, p)
			}
			for i, tok := range toks {
				if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
					errs <- fmt.Errorf("%s: publish %d: %v", dev, i, tok.Error())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	got := app.stored()
	require.Len(t, got, clients*perClient)
	seen := make(map[string]bool)
	for _, ev := range got {
		k := ev.DeviceID + "/" + ev.Stream + "/" + ev.ID
		require.False(t, seen[k], "stored twice: %s", k)
		seen[k] = true
		w, ok := expect[k]
		require.True(t, ok, "unexpected event %s", k)
		assert.Equal(t, w.ts, ev.TS, k)
		assert.Equal(t, w.value, ev.Value, k)
		assert.NotEmpty(t, ev.Tags["client"], k)
	}
	assert.Equal(t, float64(clients*perClient), accepted(m))
}

func TestBrokerPayloads(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	b := startBroker(t, app, m, BrokerOptions{MaxPayload: 1024})
	v3 := connectV3(t, v3Options(b.Addr(), "payloads-v3"))
	v5 := connectV5(t, b.Addr(), "payloads-v5")
	ts := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	// A watcher sees what the broker routes on: accepted events and foreign traffic only.
	var mu sync.Mutex
	var routed []string
	watcher := connectV3(t, v3Options(b.Addr(), "payloads-watcher"))
	waitToken(t, watcher.Subscribe("#", 1, func(_ paho3.Client, msg paho3.Message) {
		mu.Lock()
		routed = append(routed, msg.Topic()+" "+string(msg.Payload()))
		mu.Unlock()
	}))

	tests := []struct {
		name    string
		topic   string
		payload string
		reason  string // "" if accepted
		v5Code  byte
		want    event.Event
	}{
		{name: "bare number", topic: "devices/d1/temp", payload: " 21.5 ",
			want: event.Event{DeviceID: "d1", Stream: "temp", Value: 21.5}},
		{name: "json object", topic: "devices/d1/temp",
			payload: `{"ts":"2026-03-01T12:00:00Z","value":-3,"id":"x-PROTO","tags":{"room":"a"}}`,
			want:    event.Event{DeviceID: "d1", Stream: "temp", TS: ts.UnixMilli(), Value: -3, ID: "x-PROTO", Tags: map[string]string{"room": "a"}}},
		{name: "json with matching names", topic: "devices/d1/temp",
			payload: `{"device_id":"d1","stream":"temp","ts":1772366400000,"value":4}`,
			want:    event.Event{DeviceID: "d1", Stream: "temp", TS: ts.UnixMilli(), Value: 4}},
		{name: "mismatched device_id", topic: "devices/d1/temp", payload: `{"device_id":"d2","value":1}`,
			reason: "invalid_value", v5Code: 0x99},
		{name: "garbage", topic: "devices/d1/temp", payload: `not json at all`,
			reason: "malformed_json", v5Code: 0x99},
		{name: "missing value", topic: "devices/d1/temp", payload: `{"ts":1772366400000}`,
			reason: "missing_field", v5Code: 0x99},
		{name: "too large", topic: "devices/d1/temp", payload: strings.Repeat(" ", 1025) + "1",
			reason: "too_large", v5Code: 0x99},
		{name: "too many segments", topic: "devices/d1/temp/x", payload: "1",
			reason: "bad_topic", v5Code: 0x90},
		{name: "too few segments", topic: "devices/d1", payload: "1",
			reason: "bad_topic", v5Code: 0x90},
		{name: "empty segment", topic: "devices//temp", payload: "1",
			reason: "bad_topic", v5Code: 0x90},
	}
	for _, tc := range tests {
		for _, proto := range []string{"v3.1.1", "v5"} {
			t.Run(tc.name+"/"+proto, func(t *testing.T) {
				payload := strings.ReplaceAll(tc.payload, "PROTO", proto)
				want := tc.want
				want.ID = strings.ReplaceAll(want.ID, "PROTO", proto)
				before := app.count()
				rejBefore := rejected(m, tc.reason)
				accBefore := accepted(m)
				var code byte
				if proto == "v5" {
					code = publishV5(t, v5, tc.topic, []byte(payload))
				} else {
					waitToken(t, v3.Publish(tc.topic, 1, false, payload)) // acked either way
				}

				if tc.reason != "" {
					if proto == "v5" {
						assert.Equal(t, tc.v5Code, code, "PUBACK reason code")
					}
					assert.Equal(t, before, app.count(), "rejected event stored")
					assert.Equal(t, rejBefore+1, rejected(m, tc.reason))
					assert.Equal(t, accBefore, accepted(m))
					return
				}
				assert.Equal(t, byte(0), code)
				require.Equal(t, before+1, app.count())
				got := app.stored()[before]
				if want.TS == 0 { // bare number: stamped with the node's clock
					assert.InDelta(t, time.Now().UnixMilli(), got.TS, float64(time.Minute.Milliseconds()))
					assert.True(t, got.TSAssigned, "the ts is the node's")
					got.TS, got.TSAssigned = 0, false
				}
				assert.Equal(t, want, got)
				assert.Equal(t, accBefore+1, accepted(m))
			})
		}
	}

	// Foreign traffic is routed untouched and not ingested; the node keeps serving.
	before := app.count()
	waitToken(t, v3.Publish("site/lobby/door", 1, false, "open"))
	assert.Equal(t, byte(0), publishV5(t, v5, "devices/d9/temp", []byte("9")))
	assert.Equal(t, before+1, app.count())

	eventually(t, "routed messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(routed) >= 2*3+2
	})
	mu.Lock()
	defer mu.Unlock()
	for _, r := range routed {
		assert.True(t, strings.HasPrefix(r, "devices/d1/temp ") || r == "site/lobby/door open" || r == "devices/d9/temp 9",
			"routed a rejected message: %q", r)
	}
	assert.Contains(t, routed, "site/lobby/door open")
}

// A device's retry of an event id already stored is acknowledged and counted as a
// duplicate.
func TestBrokerDuplicate(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	b := startBroker(t, app, m, BrokerOptions{})
	v3 := connectV3(t, v3Options(b.Addr(), "dup"))
	for range 2 {
		waitToken(t, v3.Publish("devices/d1/temp", 1, false, `{"value":1,"id":"same"}`))
	}
	assert.Equal(t, 1, app.count())
	assert.Equal(t, 2.0, accepted(m))
	assert.Equal(t, 1.0, duplicates(m))
}

// An MQTT 5 client whose event cannot be stored gets a negative PUBACK.
func TestBrokerUnavailableV5(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	b := startBroker(t, app, m, BrokerOptions{})
	c := connectV5(t, b.Addr(), "unavail-v5")

	app.setFail(true)
	assert.Equal(t, byte(0x83), publishV5(t, c, "devices/d1/temp", []byte("1")))
	assert.Equal(t, 0, app.count())
	assert.Equal(t, 1.0, rejected(m, "unavailable"))

	app.setFail(false)
	assert.Equal(t, byte(0), publishV5(t, c, "devices/d1/temp", []byte("2")))
	require.Equal(t, 1, app.count())
	assert.Equal(t, 2.0, app.stored()[0].Value)
}

// An MQTT 3.1.1 client whose event cannot be stored gets no PUBACK and is
// disconnected; it resends on reconnect and the event is stored exactly once.
func TestBrokerUnavailableV311(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	b := startBroker(t, app, m, BrokerOptions{})

	lost := make(chan struct{}, 4)
	opts := v3Options(b.Addr(), "unavail-v3").
		SetConnectionLostHandler(func(paho3.Client, error) { lost <- struct{}{} })
	c := connectV3(t, opts)

	app.setFail(true)
	tok := c.Publish("devices/d1/temp", 1, false, `{"value":42,"id":"once"}`)
	recv(t, "disconnect after failed append", lost)
	select {
	case <-tok.Done():
		t.Fatal("publish acknowledged although Append failed")
	default:
	}
	require.Equal(t, 0, app.count())

	// Reconnect while storage is still down: the resend fails the same way.
	failsBefore := app.failures()
	waitToken(t, c.Connect())
	recv(t, "second disconnect", lost)
	require.Greater(t, app.failures(), failsBefore, "publish not resent on reconnect")
	require.Equal(t, 0, app.count())

	// Storage is back: the resent publish is stored and acknowledged.
	app.setFail(false)
	waitToken(t, c.Connect())
	eventually(t, "resent event stored", func() bool { return app.count() == 1 })
	waitToken(t, c.Publish("devices/d1/temp", 1, false, `{"value":43,"id":"next"}`)) // acked after the resend, same connection

	got := app.stored()
	require.Len(t, got, 2, "events: %v", eventKeys(got))
	assert.Equal(t, "once", got[0].ID)
	assert.Equal(t, 42.0, got[0].Value)
	assert.Equal(t, "next", got[1].ID)
	assert.Equal(t, 2.0, accepted(m))
	assert.Equal(t, 2.0, rejected(m, "unavailable"))
	assert.Equal(t, 0.0, duplicates(m))
}

// Close returns while an Append is blocked, without acknowledging the publish.
func TestBrokerCloseWhileAppending(t *testing.T) {
	app := newFakeAppender()
	b, err := NewBroker(BrokerOptions{Addr: "127.0.0.1:0", Logger: discardLogger()}, app, nil)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	release := app.block()
	defer release()

	c := paho3.NewClient(v3Options(b.Addr(), "closing"))
	waitToken(t, c.Connect())
	defer c.Disconnect(0)
	// A connection that never sends CONNECT must not hold Close up either.
	raw, err := net.Dial("tcp", b.Addr())
	require.NoError(t, err)
	defer raw.Close()

	tok := c.Publish("devices/d1/temp", 1, false, "1")
	recv(t, "Append to start", app.entered)
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	require.NoError(t, recv(t, "Close", closed))
	select {
	case <-tok.Done():
		assert.Error(t, tok.Error(), "publish acknowledged although never stored")
	default:
	}
	assert.Equal(t, 0, app.count())
}

// Events the buffer's pressure keeps out get MQTT 5 reason 0x97 (quota
// exceeded), are not stored and are counted by reason; others go through.
func TestBrokerRefusedUnderPressureV5(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	b := startBroker(t, app, m, BrokerOptions{Admit: func(stream string) string {
		if stream == "hvac" {
			return "refused"
		}
		return ""
	}})
	c := connectV5(t, b.Addr(), "refused-v5")
	assert.Equal(t, byte(0x97), publishV5(t, c, "devices/d1/hvac", []byte("1")))
	assert.Equal(t, byte(0), publishV5(t, c, "devices/d1/temp", []byte("2")))
	require.Equal(t, 1, app.count())
	assert.Equal(t, 2.0, app.stored()[0].Value)
	assert.Equal(t, 1.0, rejected(m, "refused"))
}

// Publish reaches a real subscriber (the alert notifier's path) and is not
// ingested; a topic under devices/ is refused, so the node never feeds itself.
func TestBrokerPublish(t *testing.T) {
	app := newFakeAppender()
	b := startBroker(t, app, nil, BrokerOptions{})
	got := make(chan paho3.Message, 4)
	c := connectV3(t, v3Options(b.Addr(), "watcher"))
	waitToken(t, c.Subscribe("#", 1, func(_ paho3.Client, m paho3.Message) { got <- m }))

	require.NoError(t, b.Publish("holdfast/alerts/critical/hot", []byte(`{"id":"a"}`), false, 1))
	m := recv(t, "published message", got)
	assert.Equal(t, "holdfast/alerts/critical/hot", m.Topic())
	assert.Equal(t, `{"id":"a"}`, string(m.Payload()))
	assert.Equal(t, byte(1), m.Qos())

	require.ErrorIs(t, b.Publish("devices/d1/temp", []byte("1"), false, 1), ErrDeviceTopic)
	require.NoError(t, b.Publish("holdfast/alerts/info/marker", nil, false, 1))
	assert.Equal(t, "holdfast/alerts/info/marker", recv(t, "marker", got).Topic(), "devices/ message routed")
	assert.Equal(t, 0, app.count())

	// Closed with the node: mochi's inline client would publish to no one
	// without an error; Publish refuses, so the alert notifier keeps the
	// alert for the next start instead of counting it delivered.
	require.False(t, b.Closed())
	require.NoError(t, b.Close())
	require.True(t, b.Closed())
	require.ErrorIs(t, b.Publish("holdfast/alerts/critical/hot", []byte(`{"id":"b"}`), false, 1), ErrClosed)
}

// Under buffer pressure an MQTT 3.1.1 PUBACK still means stored or deliberately
// not: a sampled event is acknowledged (and not stored); a refused one is not
// acknowledged and the connection is closed, so the client keeps the event and
// resends it on reconnect, and once the pressure is off it is stored and acked.
func TestBrokerKeptOutUnderPressureV311(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	var emergency atomic.Bool
	emergency.Store(true)
	b := startBroker(t, app, m, BrokerOptions{Admit: func(stream string) string {
		switch {
		case !emergency.Load():
			return pressure.Admitted
		case stream == "hvac":
			return pressure.Refused
		case stream == "temp":
			return pressure.Sampled
		}
		return pressure.Admitted
	}})
	lost := make(chan struct{}, 4)
	c := connectV3(t, v3Options(b.Addr(), "pressure-v3").
		SetConnectionLostHandler(func(paho3.Client, error) { lost <- struct{}{} }))

	// Sampled: acknowledged, not stored, counted; the connection stays.
	waitToken(t, c.Publish("devices/d1/temp", 1, false, `{"value":1,"id":"sampled"}`))
	waitToken(t, c.Publish("devices/d1/door", 1, false, `{"value":2,"id":"admitted"}`))
	require.Equal(t, []string{"d1/door/admitted"}, eventKeys(app.stored()))
	assert.Equal(t, 1.0, rejected(m, pressure.Sampled))

	// Refused: no ack, the connection is closed.
	tok := c.Publish("devices/d1/hvac", 1, false, `{"value":3,"id":"refused"}`)
	recv(t, "disconnect after a refused publish", lost)
	select {
	case <-tok.Done():
		t.Fatal("refused publish acknowledged")
	default:
	}
	assert.Equal(t, 1.0, rejected(m, pressure.Refused))

	// Still refused on reconnect: the client resent it and lost the connection again.
	waitToken(t, c.Connect())
	recv(t, "second disconnect", lost)
	assert.Equal(t, 2.0, rejected(m, pressure.Refused), "publish not resent on reconnect")

	// The pressure is off: the resent event is stored once and acknowledged.
	emergency.Store(false)
	waitToken(t, c.Connect())
	eventually(t, "resent event stored", func() bool { return app.count() == 2 })
	waitToken(t, c.Publish("devices/d1/hvac", 1, false, `{"value":4,"id":"after"}`))
	require.Equal(t, []string{"d1/door/admitted", "d1/hvac/after", "d1/hvac/refused"}, eventKeys(app.stored()))
	assert.Equal(t, 3.0, accepted(m))
}
