package mqttin

import (
	"context"
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// TestMoveClientsNeitherBothNorNeither moves an MQTT 5 device while one of
// its publishes is being stored: that publish is stored and acknowledged
// before the DISCONNECT 0x9C naming the new node goes out, and a publish
// sent after the move is neither stored nor acknowledged (the device sends
// it again at its new node). MQTT 3.1.1 devices and devices that stay are
// left alone.
func TestMoveClientsNeitherBothNorNeither(t *testing.T) {
	app := newFakeAppender()
	m, _ := newMetrics()
	b := startBroker(t, app, m, BrokerOptions{})

	conn, err := net.Dial("tcp", b.Addr())
	require.NoError(t, err)
	gone := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: waitFor,
		OnServerDisconnect: func(d *paho.Disconnect) { gone <- d }})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err = c.Connect(ctx, &paho.Connect{ClientID: "mover", KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	stays := connectV5(t, b.Addr(), "stays")
	v3 := connectV3(t, v3Options(b.Addr(), "mover-v3"))
	defer v3.Disconnect(0)

	require.Equal(t, byte(0), publishV5(t, c, "devices/mover/temp", []byte(`{"id":"a","ts":1700000000000,"value":1}`)))

	// B is being stored when the move comes.
	release := app.block()
	acked := make(chan error, 1)
	go func() {
		pctx, pcancel := context.WithTimeout(context.Background(), waitFor)
		defer pcancel()
		_, err := c.Publish(pctx, &paho.Publish{Topic: "devices/mover/temp", QoS: 1, Payload: []byte(`{"id":"b","ts":1700000000001,"value":2}`)})
		acked <- err
	}()
	recv(t, "B in the appender", app.entered)
	moved := b.MoveClients(func(dev string) (string, bool) {
		if dev == "mover" || dev == "mover-v3" {
			return "10.0.0.2:1883", true
		}
		return "", false
	}, 10*time.Second)
	require.Equal(t, 1, moved, "only the MQTT 5 device that belongs elsewhere moves")
	// C comes after the move.
	lost := make(chan error, 1)
	go func() {
		pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer pcancel()
		_, err := c.Publish(pctx, &paho.Publish{Topic: "devices/mover/temp", QoS: 1, Payload: []byte(`{"id":"c","ts":1700000000002,"value":3}`)})
		lost <- err
	}()
	select {
	case d := <-gone:
		t.Fatalf("DISCONNECT %#x before B was acknowledged", d.ReasonCode)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	require.NoError(t, recv(t, "B's PUBACK", acked), "B was stored: it must be acknowledged before the move")
	d := recv(t, "the DISCONNECT", gone)
	require.EqualValues(t, 0x9C, d.ReasonCode)
	require.NotNil(t, d.Properties)
	require.Equal(t, "10.0.0.2:1883", d.Properties.ServerReference)
	require.Error(t, recv(t, "C's outcome", lost), "C must not be acknowledged here")
	require.Equal(t, []string{"mover/temp/a", "mover/temp/b"}, eventKeys(app.stored()), "stored: exactly what was acknowledged")

	// The others stay connected and keep publishing.
	require.Equal(t, byte(0), publishV5(t, stays, "devices/stays/temp", []byte(`{"id":"s","ts":1700000000003,"value":4}`)))
	tok := v3.Publish("devices/mover-v3/temp", 1, false, []byte(`{"id":"v","ts":1700000000004,"value":5}`))
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
}
