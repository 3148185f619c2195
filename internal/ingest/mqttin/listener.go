package mqttin

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// tcpListener is a mochi listeners.Listener around a net.Listener the Broker opened
// itself, so the bound address of port 0 is known. Unlike mochi's TCP listener, its
// Close also closes connections that never sent CONNECT and waits until every
// connection goroutine it started has returned.
type tcpListener struct {
	id  string
	ln  net.Listener
	log *slog.Logger // set by Init
	// table, if set, gets every connection from accept to close.
	table *connTable
	// disconnect disconnects the listener's clients at Close, in place of
	// the CloseFn mochi passes it (Broker.disconnectClients says why).
	disconnect func(listener string)

	mu      sync.Mutex
	conns   map[net.Conn]struct{} // open connections; guarded by mu
	closed  bool                  // guarded by mu
	serving bool                  // Serve was entered; guarded by mu
	served  chan struct{}         // closed when Serve returns
	wg      sync.WaitGroup        // connection goroutines; Add only under mu while !closed
}

var _ listeners.Listener = (*tcpListener)(nil)

func newTCPListener(id string, ln net.Listener, disconnect func(listener string)) *tcpListener {
	return &tcpListener{
		id:         id,
		ln:         ln,
		disconnect: disconnect,
		log:        slog.Default(),
		conns:      make(map[net.Conn]struct{}),
		served:     make(chan struct{}),
	}
}

func (l *tcpListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *tcpListener) ID() string       { return l.id }
func (l *tcpListener) Address() string  { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string { return "tcp" }

// Serve accepts connections until Close and hands each to establish, which runs
// the client's session and returns when it ends.
func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.serving = true
	l.mu.Unlock()
	defer close(l.served)

	var delay time.Duration // back-off after accept errors such as EMFILE
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept", "error", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !l.track(conn) {
			_ = conn.Close()
			return
		}
		go func() {
			defer l.wg.Done()
			defer l.untrack(conn)
			if err := establish(l.id, conn); err != nil {
				l.log.Debug("client connection ended", "remote", conn.RemoteAddr(), "error", err)
			}
		}()
	}
}

// track registers a new connection and its goroutine, unless the listener is closed.
func (l *tcpListener) track(conn net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[conn] = struct{}{}
	if l.table != nil {
		l.table.add(conn)
	}
	l.wg.Add(1)
	return true
}

func (l *tcpListener) untrack(conn net.Conn) {
	_ = conn.Close()
	l.mu.Lock()
	delete(l.conns, conn)
	l.mu.Unlock()
	if l.table != nil {
		l.table.remove(conn)
	}
}

// Close stops accepting, disconnects the clients (MQTT 5 clients get
// DISCONNECT 0x8B), closes every remaining connection and waits for all
// connection goroutines and Serve to return.
func (l *tcpListener) Close(listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	serving := l.serving
	l.mu.Unlock()

	_ = l.ln.Close()
	l.disconnect(l.id)
	l.mu.Lock()
	for conn := range l.conns {
		_ = conn.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	if serving {
		<-l.served
	}
}
