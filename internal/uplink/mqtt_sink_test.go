package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

func startMosquitto(t *testing.T, addr string) string {
	t.Helper()
	addr, _ = testutil.RunMosquitto(t, addr)
	return addr
}

type mqttMsg struct {
	topic   string
	payload []byte
}

// TestMQTTSinkSyncsEveryRecord syncs 500 events of two streams, one of them
// with every character that needs escaping, through a real Syncer to a real
// Mosquitto, and checks what a subscriber to holdfast/# receives.
func TestMQTTSinkSyncsEveryRecord(t *testing.T) {
	addr := startMosquitto(t, "")

	var mu sync.Mutex
	got := map[uint64]mqttMsg{}
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("test-sub").
		SetAutoReconnect(false).SetCleanSession(true))
	tok := sub.Connect()
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	defer sub.Disconnect(250)
	tok = sub.Subscribe("holdfast/#", 1, func(_ paho.Client, m paho.Message) {
		var l wireLine
		if !assert.NoError(t, json.Unmarshal(m.Payload(), &l), "%s", m.Payload()) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		got[l.Offset] = mqttMsg{m.Topic(), append([]byte(nil), m.Payload()...)}
	})
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())

	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	const odd = "hall/1+#%"
	var want map[uint64]expected
	{
		// Only events: fillLog adds processor records every 97 events.
		want = map[uint64]expected{}
		for i := range 500 {
			stream := []string{"temp", odd}[i%2]
			e := event.Event{DeviceID: fmt.Sprint("dev-", i%7), Stream: stream, TS: 1_700_000_000_000 + int64(i),
				Value: float64(i), Received: 1_700_000_001_000}
			off, err := l.Append(e.AppendBinary(nil))
			require.NoError(t, err)
			want[off] = expected{"event", stream, map[string]any{
				"device_id": e.DeviceID, "stream": stream, "ts": jsonMillis(e.TS), "value": e.Value,
				"received_at": jsonMillis(e.Received),
			}}
		}
	}

	sink, err := NewMQTTSink(MQTTSinkOptions{BrokerURL: "tcp://" + addr, NodeID: "edge-1"})
	require.NoError(t, err)
	s := NewSyncer(l, sink, SyncOptions{
		BatchRecords: 128,
		Retry:        RetryOptions{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond},
		Breaker:      BreakerOptions{OpenTimeout: 50 * time.Millisecond},
	})
	s.Start()
	waitSynced(t, s, l)
	require.NoError(t, s.Close())

	eventually(t, "every record at the subscriber", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(want)
	})
	mu.Lock()
	defer mu.Unlock()
	lines := map[uint64]wireLine{}
	for off, m := range got {
		w, ok := want[off]
		require.True(t, ok, "unexpected offset %d", off)
		topic := "holdfast/edge-1/events/temp"
		if w.stream == odd {
			topic = "holdfast/edge-1/events/hall%2F1%2B%23%25"
		}
		require.Equal(t, topic, m.topic, "offset %d", off)
		require.NotContains(t, string(m.payload), "\n")
		var l wireLine
		require.NoError(t, json.Unmarshal(m.payload, &l))
		lines[off] = l
	}
	checkLines(t, "edge-1", want, lines)
}

// TestMQTTSinkBrokerDown checks that a sink without a broker fails retryably
// and connects on a later Resume once the broker is there.
func TestMQTTSinkBrokerDown(t *testing.T) {
	addr := freeAddr(t)
	sink, err := NewMQTTSink(MQTTSinkOptions{BrokerURL: "tcp://" + addr, NodeID: "edge-1"})
	require.NoError(t, err)
	defer sink.Close()
	ctx := context.Background()
	err = sink.Resume(ctx, nil, nil)
	require.Error(t, err)
	require.False(t, IsPermanent(err))
	e := event.Event{DeviceID: "d", Stream: "s", TS: 1_700_000_000_000, Value: 1}
	recs := []Record{{Offset: 0, Type: event.TypeEvent, Stream: "s", Payload: e.AppendBinary(nil)}}
	err = sink.Send(ctx, recs)
	require.Error(t, err)
	require.False(t, IsPermanent(err))
	require.Nil(t, sink.Positions())
	require.Equal(t, "mqtt", sink.Name())

	startMosquitto(t, addr)
	require.NoError(t, sink.Resume(ctx, nil, nil))
	require.NoError(t, sink.Send(ctx, recs))
	require.NoError(t, sink.Resume(ctx, nil, nil)) // still connected: a no-op
	require.NoError(t, sink.Send(ctx, recs))
}

func TestEscapeTopicLevel(t *testing.T) {
	for in, want := range map[string]string{
		"temp":       "temp",
		"a/b":        "a%2Fb",
		"+":          "%2B",
		"#":          "%23",
		"100%":       "100%25",
		"%2F":        "%252F",
		"é/ü":        "é%2Fü",
		"a b.c-d_e:": "a b.c-d_e:",
	} {
		assert.Equal(t, want, EscapeTopicLevel(in), "%q", in)
	}
	r := Record{Type: event.TypeWatermark, Stream: "x/y"}
	assert.Equal(t, "p/n%2B1/watermarks/x%2Fy", MQTTTopic("p", "n+1", r))
}

func TestMQTTSinkOptions(t *testing.T) {
	for _, o := range []MQTTSinkOptions{
		{NodeID: "n"},
		{BrokerURL: "tcp://x:1883"},
		{BrokerURL: "tcp://x:1883", NodeID: "n", TopicPrefix: "a/+"},
	} {
		_, err := NewMQTTSink(o)
		assert.Error(t, err, "%+v", o)
	}
	s, err := NewMQTTSink(MQTTSinkOptions{BrokerURL: "tcp://x:1883", NodeID: "n"})
	require.NoError(t, err)
	assert.Equal(t, "holdfast-bridge-n", s.o.ClientID)
	assert.Equal(t, "holdfast", s.o.TopicPrefix)
}

// TestMQTTSinkBrokerRestart takes the broker away while the log grows and
// brings a new one up on the same address: the syncer goes through a failed
// sync, the sink dials again on the next Resume, and the sync catches up.
func TestMQTTSinkBrokerRestart(t *testing.T) {
	addr, stop := testutil.RunMosquitto(t, "")
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	sink, err := NewMQTTSink(MQTTSinkOptions{BrokerURL: "tcp://" + addr, NodeID: "edge-1"})
	require.NoError(t, err)
	s := NewSyncer(l, sink, SyncOptions{
		Retry:   RetryOptions{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond},
		Breaker: BreakerOptions{OpenTimeout: 50 * time.Millisecond},
	})
	s.Start()
	defer s.Close()
	appendEvents(t, l, 0, 200)
	waitSynced(t, s, l)

	stop()
	appendEvents(t, l, 200, 200)
	eventually(t, "a failed sync", func() bool { return s.Status().ConsecutiveFailures > 0 })
	require.Less(t, s.Status().SyncedOffset, l.DurableOffset())
	startMosquitto(t, addr)
	waitSynced(t, s, l)
	require.Equal(t, Connected, s.Status().State)
}

// TestMQTTSinkSendFailsWhenConnectionDrops has a broker that accepts the
// connection and then drops it after the first PUBLISH, unacknowledged. With
// its persistent session and reconnect off, paho never completes the tokens
// of the unacknowledged publishes: Send must see the lost connection and fail
// (retryably) at once, not wait out its context.
func TestMQTTSinkSendFailsWhenConnectionDrops(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	brokerDone := make(chan struct{})
	go func() {
		defer close(brokerDone)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if p, err := packets.ReadPacket(c); err != nil {
			return
		} else if _, ok := p.(*packets.ConnectPacket); !ok {
			return
		}
		ack := packets.NewControlPacket(packets.Connack).(*packets.ConnackPacket)
		if ack.Write(c) != nil {
			return
		}
		for {
			p, err := packets.ReadPacket(c)
			if err != nil {
				return
			}
			if _, ok := p.(*packets.PublishPacket); ok {
				return // drop the connection, no PUBACK
			}
		}
	}()

	sink, err := NewMQTTSink(MQTTSinkOptions{BrokerURL: "tcp://" + l.Addr().String(), NodeID: "edge-1"})
	require.NoError(t, err)
	defer sink.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // the syncer's SendTimeout is 30s
	defer cancel()
	require.NoError(t, sink.Resume(ctx, nil, nil))
	var recs []Record
	for i := range 3 {
		e := event.Event{DeviceID: "d", Stream: "s", TS: 1_700_000_000_000 + int64(i), Value: 1}
		recs = append(recs, Record{Offset: uint64(i), Type: event.TypeEvent, Stream: "s", Payload: e.AppendBinary(nil)})
	}
	err = sink.Send(ctx, recs)
	require.Error(t, err)
	require.False(t, IsPermanent(err))
	// The lost connection ended Send, not its context. (No bound on how
	// long paho takes to report the loss: usually at once, up to 10 s on
	// a loaded machine; a timed assertion flaked.)
	require.NoError(t, ctx.Err(), "Send waited for its context: %v", err)
	<-brokerDone
}
