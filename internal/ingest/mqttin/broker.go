package mqttin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/ingest/ratelimit"
)

// DefaultAddr is where the embedded broker listens by default.
const DefaultAddr = "127.0.0.1:1883"

// packetOverhead is how much larger than MaxPayload a packet may be (topic name and
// MQTT 5 properties) before the broker refuses to read it and drops the connection.
const packetOverhead = 64 << 10

// maxWritesPending bounds the packets queued to one connection (mochi's
// MaximumClientWritesPending): room for a subscriber's bursts, 4 KiB a
// connection.
const maxWritesPending = 512

// Errors returned by Broker and Subscriber lifecycle methods.
var (
	ErrStarted = errors.New("mqttin: already started")
	ErrClosed  = errors.New("mqttin: closed")
	// ErrDeviceTopic is returned by Publish for a topic the node would
	// ingest (under devices/, or matching the Subscriber's filter): it
	// publishes nothing it would feed itself.
	ErrDeviceTopic = errors.New("mqttin: the node ingests this topic")
)

// BrokerOptions configure the embedded broker. Zero values take the defaults.
type BrokerOptions struct {
	// Addr is the TCP address to listen on (default DefaultAddr). Port 0 picks a
	// free port; Addr() reports it.
	Addr string
	// MaxPayload is the largest devices/ payload accepted, in bytes (default
	// DefaultMaxPayload); larger ones are rejected as "too_large". Packets more
	// than 64 KiB above it, on any topic, are not read at all: the connection is
	// closed.
	MaxPayload int
	// Limits are passed to event.ParseMQTT.
	Limits event.Limits
	// Admit, if set, decides per event whether the buffer's pressure lets it
	// in: "" admits, anything else (pressure.Sampled, pressure.Refused) is why
	// not. Kept-out QoS 1/2 messages get MQTT 5 reason 0x97 (quota exceeded).
	// MQTT 3.1.1 has no negative ack: a sampled message is acknowledged (a
	// deliberate drop, which a resend would not undo), a refused one is not
	// and its connection is closed, so the client resends it later.
	Admit func(stream string) string
	// Guard, if set, authenticates every client at CONNECT (username the
	// device id, password its token; or a verified client certificate naming
	// the device) and confines it by the ACL to its own devices/<id>/...
	// topics and to reading the alert prefix. Nil: anyone may connect.
	Guard *auth.Guard
	// AlertPrefix is the topic prefix of the node's alerts (default
	// DefaultAlertPrefix): no client publishes under it, with or without a
	// Guard; the node does, through Publish.
	AlertPrefix string
	// MaxConnectionsPerSource bounds the connections open from one IP
	// address; more are refused at CONNECT (MQTT 5 0x97 quota exceeded,
	// 3.1.1 0x03 server unavailable). 0: no limit. Loopback addresses are
	// not limited: the node's own machine, such as a local proxy whose
	// clients all share its address, or `holdfast bench`.
	MaxConnectionsPerSource int
	// limitLoopback limits loopback sources too (tests).
	limitLoopback bool
	// Redirect, if set, is asked at every CONNECT whether this node takes
	// devices at all (a standby of an HA pair does not): ok false admits the
	// client; otherwise it is refused, MQTT 5 with reason 0x9C "use another
	// server" and ref as the Server Reference property (none if ref is ""),
	// MQTT 3.1.1 with return code 0x03 "server unavailable", so the device
	// moves on to the next server it is configured with.
	Redirect func() (ref string, ok bool)
	// Owner, if set, is asked at every MQTT 5 CONNECT where the device (its
	// username, else its client id) belongs: ok sends it there with
	// CONNACK 0x9C and ref as the server reference (a site node that does
	// not own it). MQTT 3.1.1 has no redirect: such a device is served
	// where it lands, and the appender forwards its events.
	Owner func(device string) (ref string, ok bool)
	// Limiter, if set, is the per-device rate limit (limits.device_rate).
	// Over it, an MQTT 5 QoS 1/2 message gets reason 0x97 (quota exceeded)
	// and is not stored (QoS 0: dropped, counted), and its connection is
	// read again only once the device has a token (at most MaxHold), so a
	// device that ignores its 0x97s is taken in at about its rate; an MQTT
	// 3.1.1 message, which has no negative ack, is held on its client's
	// connection until the device is back under its limit (at most
	// MaxHold), then stored and acknowledged: the device is slowed, nothing
	// is lost.
	Limiter *ratelimit.Limiter
	// MaxHold bounds those holds (default DefaultMaxHold).
	MaxHold time.Duration
	// AccessMetrics counts the connections and ACL checks refused; nil: not counted.
	AccessMetrics *AccessMetrics
	// Auth, if set, replaces the access control above (the per-source
	// limit, Guard and the ACL) with another mochi hook providing
	// OnConnectAuthenticate and OnACLCheck: a seam for tests.
	Auth mqtt.Hook
	// TLSConfig, if set, makes the listener speak MQTT over TLS. A hook sees
	// a client's TLS state, and its verified certificate, through
	// cl.Net.Conn.(*tls.Conn).ConnectionState(): the handshake is complete
	// by OnConnectAuthenticate, the CONNECT having been read over it.
	TLSConfig *tls.Config
	// Logger receives the broker's logs (default slog.Default()).
	Logger *slog.Logger
}

// Validate reports options that cannot work.
func (o BrokerOptions) Validate() error {
	if o.MaxConnectionsPerSource < 0 {
		return fmt.Errorf("mqttin: max connections per source %d is negative", o.MaxConnectionsPerSource)
	}
	if strings.ContainsAny(o.AlertPrefix, "+#") || strings.HasSuffix(o.AlertPrefix, "/") {
		return fmt.Errorf("mqttin: alert prefix %q: no wildcards or trailing /", o.AlertPrefix)
	}
	if o.MaxPayload < 0 {
		return fmt.Errorf("mqttin: max payload %d is negative", o.MaxPayload)
	}
	if o.Addr != "" {
		if _, _, err := net.SplitHostPort(o.Addr); err != nil {
			return fmt.Errorf("mqttin: listen address: %w", err)
		}
	}
	return nil
}

func (o BrokerOptions) withDefaults() BrokerOptions {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AlertPrefix == "" {
		o.AlertPrefix = DefaultAlertPrefix
	}
	if o.MaxHold <= 0 {
		o.MaxHold = DefaultMaxHold
	}
	return o
}

// Broker is the embedded MQTT broker: it ingests what devices publish on
// devices/{device_id}/{stream} and routes all messages like any broker.
type Broker struct {
	opts   BrokerOptions
	srv    *mqtt.Server
	conns  *connTable
	access mqtt.Hook       // the access control hook
	moves  *moves          // devices on their way to another node (MoveClients)
	ingest *ingestHook     // stores devices' messages; its pipes end before Close returns
	ctx    context.Context // cancelled by Close, so blocked appends return
	cancel context.CancelFunc

	mu      sync.Mutex
	ln      *tcpListener // set by Start; guarded by mu
	started bool         // guarded by mu
	closed  bool         // guarded by mu
}

// NewBroker builds a broker that hands devices/ messages to app and counts them in m
// (nil m: counters not registered anywhere). It does not listen until Start.
func NewBroker(opts BrokerOptions, app ingest.Appender, m *ingest.Metrics) (*Broker, error) {
	if app == nil {
		return nil, errors.New("mqttin: nil Appender")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	log := opts.Logger.With("component", "mqtt-broker")

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(opts.MaxPayload + packetOverhead)
	// mochi gives every connection a channel of this many pending writes
	// up front: 8 192 by default, 64 KiB a connection even for a device
	// that never subscribes. Devices publish; a subscriber that falls this
	// far behind has its messages dropped (mochi logs it), as before at a
	// larger number.
	caps.MaximumClientWritesPending = maxWritesPending
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       log,
		// Publish (alerts on holdfast/alerts/...) goes through mochi's
		// inline client; without it every Publish fails.
		InlineClient: true,
		// A device's messages are small: 1 KiB read buffers (2 KiB by
		// default) keep an idle connection small; larger packets are read
		// past the buffer.
		ClientNetReadBufferSize: 1 << 10,
	})

	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{opts: opts, srv: srv, conns: newConnTable(), ctx: ctx, cancel: cancel, moves: newMoves()}
	access := opts.Auth
	if access == nil {
		access = &accessHook{srv: srv, guard: opts.Guard, alert: opts.AlertPrefix,
			maxSource: opts.MaxConnectionsPerSource, limitLoopback: opts.limitLoopback, conns: b.conns, m: opts.AccessMetrics, log: log,
			redirect: opts.Redirect, owner: opts.Owner}
	}
	b.access = access
	if err := srv.AddHook(access, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("mqttin: add auth hook: %w", err)
	}
	if err := srv.AddHook(&moveHook{m: b.moves}, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("mqttin: add move hook: %w", err)
	}
	in := newIngester(app, m, opts.MaxPayload, opts.Limits, log, opts.Admit)
	in.limiter, in.maxHold = opts.Limiter, opts.MaxHold
	h := &ingestHook{in: in, ctx: ctx, log: log, moves: b.moves, srv: srv}
	b.ingest = h
	if err := srv.AddHook(h, nil); err != nil {
		cancel()
		return nil, fmt.Errorf("mqttin: add ingest hook: %w", err)
	}
	return b, nil
}

// Start listens on Options.Addr and serves clients until Close.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return ErrStarted
	}
	nl, err := net.Listen("tcp", b.opts.Addr)
	if err != nil {
		return fmt.Errorf("mqttin: listen: %w", err)
	}
	if b.opts.TLSConfig != nil {
		nl = tls.NewListener(nl, b.opts.TLSConfig) // handshakes on the connection's goroutine
	}
	ln := newTCPListener("holdfast-tcp", nl, b.disconnectClients)
	ln.table = b.conns
	if err := b.srv.AddListener(ln); err != nil {
		_ = nl.Close()
		return fmt.Errorf("mqttin: add listener: %w", err)
	}
	b.ln = ln
	b.started = true
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("mqttin: serve: %w", err)
	}
	return nil
}

// disconnectClients does at Close what mochi's own closeListenerClients
// does: every open client of the listener gets DISCONNECT 0x8B "server
// shutting down" (MQTT 5) and is stopped. mochi's version lists them with
// Clients.GetByListener, which takes the clients' read lock twice (v2.7.9):
// a client leaving at that moment, whose Delete waits for the write lock,
// blocks the second read lock, and the close hangs for good. GetAll takes
// it once.
func (b *Broker) disconnectClients(listener string) {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener == listener && !cl.Closed() {
			_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}

// Addr returns the address the broker listens on: the bound address once
// started, Options.Addr before.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ln != nil {
		return b.ln.Address()
	}
	return b.opts.Addr
}

// Publish sends a message from the broker itself to its subscribers, e.g. an
// alert on holdfast/alerts/...; it satisfies alert.Publisher. Subscribers get
// it at the lower of qos and their subscription's QoS. It is not ingested:
// topics under devices/ are refused, so the node never feeds itself.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if isDeviceTopic(topic) {
		return fmt.Errorf("mqttin: publish to %q: %w", topic, ErrDeviceTopic)
	}
	// mochi's inline client publishes into a closed server without an error,
	// to no one: refuse instead, so the alert notifier keeps the alert for
	// the next start (Closed).
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("mqttin: publish to %q: %w", topic, ErrClosed)
	}
	return b.srv.Publish(topic, payload, retain, qos)
}

// Closed reports whether Close was called: Publish then fails with ErrClosed.
func (b *Broker) Closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close stops listening, abandons appends still waiting (their messages are not
// acknowledged), disconnects every client and returns once all the broker's
// goroutines have ended.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	b.cancel()
	// Server.Close closes our listener, which waits for every connection.
	err := b.srv.Close()
	b.ingest.wait() // the pipes: their appends are abandoned
	return err
}
