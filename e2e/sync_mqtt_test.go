package e2e

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// TestSyncMQTTBridgeSurvivesFaults is TestSyncSurvivesFaultsAndCrashes for
// the MQTT bridge sink: the node publishes through toxiproxy to a real
// Mosquitto, under the same faults and SIGKILLs, and a paho subscriber on the
// broker must end up with every stored event and window, at least once.
//
// The far end subscribes before the node first starts, QoS 1 on a persistent
// session, and its handler only decodes the line into the recorder. Once the
// node has drained, the far end publishes a marker to itself: Mosquitto
// delivers a client's messages in the order it queued them and paho (with
// OrderMatters) hands them over in order, so when the marker arrives every
// record the broker acknowledged to the node has been recorded.
//
// The node reaches toxiproxy through drainingFront, see there why.
func TestSyncMQTTBridgeSurvivesFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	t.Parallel()
	broker := testutil.StartMosquitto(t) // skips, or fails under HOLDFAST_REQUIRE_MOSQUITTO, without mosquitto

	const barrierTopic = "far-end/barrier"
	rec := newLineRecorder()
	barrier := make(chan string, 16)
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("far-end").
		SetCleanSession(false).SetAutoReconnect(true).SetResumeSubs(true).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			if m.Topic() == barrierTopic {
				select {
				case barrier <- string(m.Payload()):
				default:
				}
				return
			}
			rec.add(m.Payload())
		}))
	tok := sub.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	defer sub.Disconnect(250)
	tok = sub.SubscribeMultiple(map[string]byte{"holdfast/#": 1, barrierTopic: 1}, nil)
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())

	runSyncFaults(t, faultTarget{
		config: func(proxy string) string {
			return "cloud:\n  mqtt:\n    broker: tcp://" + startDrainingFront(t, proxy) + "\n"
		},
		upstream: broker,
		collect: func(t *testing.T) received {
			nonce := strconv.FormatInt(time.Now().UnixNano(), 10)
			tok := sub.Publish(barrierTopic, 1, false, nonce)
			require.True(t, tok.WaitTimeout(10*time.Second))
			require.NoError(t, tok.Error())
			deadline := time.After(60 * time.Second)
			for {
				select {
				case got := <-barrier:
					if got == nonce {
						return rec.received()
					}
				case <-deadline:
					t.Fatal("the far end's marker never came back: deliveries stalled")
				}
			}
		},
		atLeastOnce: true,
	})
}

// startDrainingFront listens on 127.0.0.1 and forwards each connection to
// proxy (toxiproxy), and returns its address. It keeps fault semantics: a
// reset or close from the proxy reaches the node as a reset or close, and the
// node's close or crash reaches the proxy as a close.
//
// Why it is there: after a SIGKILL the toxiproxy link toward the dead node has
// nobody reading its output. If the test removes a toxic (as runSyncFaults
// does right after the kill) while that link still has chunks queued in it,
// toxiproxy's ToxicLink.RemoveToxic flushes each queued chunk with a 5 s
// timeout (toxiproxy v2.12.0 link.go, WriteOutput(tmp, 5*time.Second)),
// holding the collection lock. Mosquitto writes every PUBACK as a write of its
// own, so the downstream latency toxic holds one chunk per in-flight message:
// RemoveToxic then took 40 s to several minutes and the run stalled. Behind
// this front the proxy's link writes to a live socket that, once the node is
// gone, reads and discards until the proxy closes the link.
func startDrainingFront(t *testing.T, proxy string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]bool{}
		closed bool
		wg     sync.WaitGroup
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		delete(conns, c)
	}
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			node, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !track(node) {
					return
				}
				defer untrack(node)
				up, err := net.DialTimeout("tcp", proxy, 5*time.Second)
				if err != nil { // the proxy is down: so is the link
					node.Close()
					return
				}
				if !track(up) {
					node.Close()
					return
				}
				defer untrack(up)
				forward(node.(*net.TCPConn), up.(*net.TCPConn))
			}()
		}
	}()
	return l.Addr().String()
}

// forward copies between the node and the proxy until both directions end.
func forward(node, up *net.TCPConn) {
	done := make(chan struct{})
	go func() { // proxy → node
		defer close(done)
		buf := make([]byte, 32<<10)
		nodeGone := false
		for {
			n, err := up.Read(buf)
			if n > 0 && !nodeGone {
				if _, werr := node.Write(buf[:n]); werr != nil {
					// The node is gone: keep reading what the proxy still
					// has queued, for a while, so that it can flush.
					nodeGone = true
					_ = up.SetReadDeadline(time.Now().Add(30 * time.Second))
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					_ = node.SetLinger(0) // a reset stays a reset
				}
				node.Close()
				return
			}
		}
	}()
	// node → proxy
	_, err := io.Copy(up, node)
	if err != nil {
		// Reading the node failed (it crashed and reset) or writing the proxy
		// did (the proxy reset us, and the other direction sees that too).
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "write" {
			_ = node.SetLinger(0)
			node.Close()
		}
	}
	_ = up.CloseWrite()
	<-done
	up.Close()
}
