package mqttin

import (
	"fmt"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// TestPipelineSharesAnAppendAndKeepsOrder: while one message's Append waits
// for its fsync, the connection's next messages are read and queued, and
// go to the buffer together in one Append once it returns; each is
// acknowledged only after its own Append, and the events are stored in the
// order sent. A QoS 2 message after them is stored after them.
func TestPipelineSharesAnAppendAndKeepsOrder(t *testing.T) {
	app := newFakeAppender()
	b := startBroker(t, app, nil, BrokerOptions{})
	c := connectV3(t, v3Options(b.Addr(), "pipeline-v3").SetOrderMatters(false))

	release := app.block()
	first := c.Publish("devices/d1/temp", 1, false, `{"value":0,"id":"m0"}`)
	recv(t, "the first Append", app.entered)
	var toks []paho3.Token
	for i := 1; i < 10; i++ {
		toks = append(toks, c.Publish("devices/d1/temp", 1, false, fmt.Sprintf(`{"value":%d,"id":"m%d"}`, i, i)))
	}
	eventually(t, "the next nine read and queued", func() bool {
		p := b.ingest.pipes.of(connected(t, b, "pipeline-v3"))
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.pending() == 9
	})
	for _, tok := range append(toks, first) {
		require.False(t, tok.WaitTimeout(0), "acknowledged before its Append returned")
	}
	release()
	for _, tok := range append(toks, first) {
		waitToken(t, tok)
	}
	q2 := c.Publish("devices/d1/temp", 2, false, `{"value":10,"id":"m10"}`)
	waitToken(t, q2)

	var want []string
	for i := range 11 {
		want = append(want, fmt.Sprintf("d1/temp/m%d", i))
	}
	got := app.stored()
	var keys []string
	for _, e := range got {
		keys = append(keys, e.DeviceID+"/"+e.Stream+"/"+e.ID)
	}
	require.Equal(t, want, keys, "stored in the order sent")
	app.mu.Lock()
	calls := app.calls
	app.mu.Unlock()
	require.Equal(t, 3, calls, "the first alone, the nine queued behind it together, the QoS 2 one")
}

// TestPipelineStoresNothingAfterAClosingRefusal: a 3.1.1 message refused
// under pressure closes the connection; what the device queued behind it
// is neither stored nor acknowledged (it resends it), what came before is.
func TestPipelineStoresNothingAfterAClosingRefusal(t *testing.T) {
	app := newFakeAppender()
	b := startBroker(t, app, nil, BrokerOptions{Admit: func(stream string) string {
		if stream == "hvac" {
			return pressure.Refused
		}
		return pressure.Admitted
	}})
	lost := make(chan struct{}, 1)
	c := connectV3(t, v3Options(b.Addr(), "pipeline-refused").
		SetConnectionLostHandler(func(paho3.Client, error) { lost <- struct{}{} }))
	release := app.block()
	before := c.Publish("devices/d1/temp", 1, false, `{"value":1,"id":"before"}`)
	recv(t, "the first Append", app.entered)
	refused := c.Publish("devices/d1/hvac", 1, false, `{"value":2,"id":"refused"}`)
	after := c.Publish("devices/d1/temp", 1, false, `{"value":3,"id":"after"}`)
	eventually(t, "both queued", func() bool {
		p := b.ingest.pipes.of(connected(t, b, "pipeline-refused"))
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.pending() == 2
	})
	release()
	waitToken(t, before)
	recv(t, "the connection closed", lost)
	require.False(t, refused.WaitTimeout(0) && refused.Error() == nil, "refused acknowledged")
	require.False(t, after.WaitTimeout(0) && after.Error() == nil, "queued after the refusal acknowledged")
	require.Equal(t, []string{"d1/temp/before"}, eventKeys(app.stored()))
}

// TestRecycledRoundKeepsNothingAlive: a round goes back to the pool empty,
// its room kept and every message and event in it cleared, so that a pooled
// round holds on to no payload.
func TestRecycledRoundKeepsNothingAlive(t *testing.T) {
	r := &round{
		items:  []queued{{pk: packets.Packet{TopicName: "devices/d1/temp", Payload: []byte(`{"value":1}`)}, ev: event.Event{DeviceID: "d1"}, ready: true}},
		evs:    []event.Event{{DeviceID: "d1", Stream: "temp"}},
		starts: []time.Time{time.Now()},
	}
	r.recycle()
	require.Empty(t, r.items)
	require.Empty(t, r.evs)
	require.Empty(t, r.starts)
	require.Equal(t, queued{}, r.items[:1][0], "a message left in the pooled round")
	require.Equal(t, event.Event{}, r.evs[:1][0], "an event left in the pooled round")
}

// pending is how many messages p holds not yet taken up by its goroutine;
// p.mu held.
func (p *pipe) pending() int {
	if p.queue == nil {
		return 0
	}
	return len(p.queue.items)
}

// connected is the broker's client of a connected device.
func connected(t *testing.T, b *Broker, id string) *mqtt.Client {
	t.Helper()
	cl, ok := b.srv.Clients.Get(id)
	require.True(t, ok, "client %s connected", id)
	return cl
}
