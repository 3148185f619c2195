package uplink

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// TestLateLandingIsStoredOnce: a publish the server holds is stored after the
// sink has given up on it — its PubAck held past the settle time, or the
// publish itself held in the server's socket until after the sink has
// reconnected, resumed and sent the records again in a batch cut otherwise
// (so another Nats-Msg-Id). Whether it lands before or after the retry, the
// cloud holds every record once.
func TestLateLandingIsStoredOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		// hold what: the server's answers (the PubAck) or the client's
		// publish; release the held publish before or after the retry.
		holdAnswers, releaseBeforeRetry bool
	}{
		{name: "PubAck held past the settle time", holdAnswers: true},
		{name: "publish lands after the resume, before the retry", releaseBeforeRetry: true},
		{name: "publish lands after the retry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
			require.NoError(t, err)
			defer srv.Close()
			p := newHoldProxy(t, srv.NATS().Addr().String())
			defer p.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			nc, err := nats.Connect(srv.URL())
			require.NoError(t, err)
			defer nc.Close()
			js, err := jetstream.New(nc)
			require.NoError(t, err)

			s := NewJetStreamSink(JetStreamOptions{URL: p.URL(), NodeID: "n1", settleWait: 200 * time.Millisecond})
			defer s.Close()
			require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 0}, nil))
			require.NoError(t, s.Send(ctx, []Record{eventRecord(0, "temp", LaneNormal)}))

			// Records 1-3 go out; the sink hears nothing back and gives up.
			p.Hold(!tc.holdAnswers, tc.holdAnswers)
			sendCtx, cancelSend := context.WithTimeout(ctx, time.Second)
			err = s.Send(sendCtx, []Record{eventRecord(1, "temp", LaneNormal), eventRecord(2, "temp", LaneNormal),
				eventRecord(3, "temp", LaneNormal)})
			cancelSend()
			require.Error(t, err)
			if tc.holdAnswers {
				require.Equal(t, []uint64{0, 1, 2, 3}, storedOffsets(ctx, t, js), "the publish is stored, its PubAck held")
			}

			// The sink resumes over a new connection and sends records 1-5.
			require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 1}, s.Positions()))
			if tc.releaseBeforeRetry {
				p.Release(ctx, t, js)
				require.Equal(t, []uint64{0, 1, 2, 3}, storedOffsets(ctx, t, js), "the held publish landed")
			}
			require.NoError(t, s.Send(ctx, []Record{eventRecord(1, "temp", LaneNormal), eventRecord(2, "temp", LaneNormal),
				eventRecord(3, "temp", LaneNormal), eventRecord(4, "temp", LaneNormal), eventRecord(5, "temp", LaneNormal)}))
			p.Release(ctx, t, js)

			require.Equal(t, []uint64{0, 1, 2, 3, 4, 5}, storedOffsets(ctx, t, js), "every record once")
		})
	}
}

// storedOffsets returns the offsets of every record of node n1 in
// HOLDFAST_EVENTS, in stream order.
func storedOffsets(ctx context.Context, t *testing.T, js jetstream.JetStream) []uint64 {
	t.Helper()
	stored, err := cloud.StoredOffsets(ctx, js, "n1", cloud.StreamEvents, 0)
	require.NoError(t, err)
	var offs []uint64
	for _, st := range stored {
		offs = append(offs, st.Offset)
	}
	return offs
}

// holdProxy forwards TCP connections to a server. Hold makes the connections
// open at that moment keep what their clients send (the server never reads
// it, as if it sat in the server's socket) and drop what the server answers;
// connections opened later are not held. Release hands the held bytes to the
// server once their client has gone, as a server that read them late would
// process them.
type holdProxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns []*proxyConn
}

type proxyConn struct {
	client, server net.Conn
	clientGone     chan struct{} // the client→server pump has stopped reading
	serverGone     chan struct{} // the server→client pump has stopped reading

	mu                     sync.Mutex
	holdUp, holdDown, done bool
	held                   []byte
}

func newHoldProxy(t *testing.T, upstream string) *holdProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &holdProxy{ln: ln, upstream: upstream}
	p.wg.Go(p.accept)
	return p
}

func (p *holdProxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *holdProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.upstream)
		if err != nil {
			client.Close()
			continue
		}
		c := &proxyConn{client: client, server: server, clientGone: make(chan struct{}), serverGone: make(chan struct{})}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Go(c.up)
		p.wg.Go(c.down)
	}
}

// up copies client → server, keeping the bytes while held.
func (c *proxyConn) up() {
	defer close(c.clientGone)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.client.Read(buf)
		c.mu.Lock()
		if c.holdUp {
			c.held = append(c.held, buf[:n]...)
		} else if n > 0 {
			_, _ = c.server.Write(buf[:n])
		}
		held := c.holdUp
		c.mu.Unlock()
		if err != nil {
			if !held {
				c.server.Close()
			}
			return
		}
	}
}

// down copies server → client, dropping the bytes while held.
func (c *proxyConn) down() {
	defer close(c.serverGone)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.server.Read(buf)
		c.mu.Lock()
		if !c.holdDown && n > 0 {
			_, _ = c.client.Write(buf[:n])
		}
		c.mu.Unlock()
		if err != nil {
			c.client.Close()
			return
		}
	}
}

// Hold holds the connections open now: what clients send if up, what the
// server answers if down.
func (p *holdProxy) Hold(up, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.mu.Lock()
		c.holdUp, c.holdDown = up, down
		c.mu.Unlock()
	}
}

// Release waits for the clients of connections holding client bytes to go,
// hands those bytes to the server, waits until the server has read them and
// closed the connection, and then until the events stream has processed them
// (a probe published afterwards is acknowledged: the stream takes its
// messages in order).
func (p *holdProxy) Release(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	p.mu.Lock()
	conns := append([]*proxyConn(nil), p.conns...)
	p.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		held, pending := c.holdUp && !c.done, c.held
		c.done = true
		c.mu.Unlock()
		if !held {
			continue
		}
		select {
		case <-c.clientGone:
		case <-ctx.Done():
			t.Fatal("the held connection's client did not go")
		}
		_, err := c.server.Write(pending)
		require.NoError(t, err)
		require.NoError(t, c.server.(*net.TCPConn).CloseWrite())
		select {
		case <-c.serverGone:
		case <-ctx.Done():
			t.Fatal("the server did not close the released connection")
		}
		c.server.Close()
	}
	var b cloud.Batch
	b.Append(0, eventRecord(0, "probe", LaneNormal).Payload)
	_, err := js.PublishMsg(ctx, cloud.BatchMsg("probe", cloud.KindEvents, "probe", "normal", &b, false))
	require.NoError(t, err)
}

func (p *holdProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.client.Close()
		c.server.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
