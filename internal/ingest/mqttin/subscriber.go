package mqttin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/secret"
)

// Subscriber defaults.
const (
	DefaultTopic          = "devices/+/+"
	DefaultConnectTimeout = 10 * time.Second
	DefaultKeepAlive      = 30 * time.Second
	DefaultBackoff        = time.Second
	DefaultMaxBackoff     = 30 * time.Second
)

// disconnectQuiesce is how long a Disconnect waits for queued packets (acks) to go out.
const disconnectQuiesce = 250 // milliseconds

// SubscriberOptions configure ingestion from a site's existing broker. Zero values
// take the defaults.
type SubscriberOptions struct {
	// BrokerURL is the broker to subscribe to: tcp://host:port (or ssl://, ws://,
	// wss://). Required.
	BrokerURL string
	// ClientID identifies holdfast's session on the broker (default
	// "holdfast-<hostname>"). It must be stable across restarts: the broker keeps
	// unacknowledged and new messages for this id while holdfast is away.
	ClientID string
	// Username and Password authenticate to the broker, if set.
	Username string
	Password string
	// TLSConfig is used for ssl://, tls:// and wss:// brokers: a CA to trust,
	// a client certificate. Nil: the system's roots.
	TLSConfig *tls.Config
	// Topic is the filter subscribed to with QoS 1 (default DefaultTopic). The
	// subscription lives in the broker's session and is only made when the broker
	// has no session for ClientID, so changing Topic needs a new ClientID.
	Topic string
	// MaxPayload is the largest payload accepted, in bytes (default
	// DefaultMaxPayload); larger ones are rejected as "too_large".
	MaxPayload int
	// Limits are passed to event.ParseMQTT.
	Limits event.Limits
	// Admit is as in BrokerOptions.
	Admit func(stream string) string
	// ConnectTimeout bounds one connection attempt, and so how long Close may wait
	// for one in progress (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// KeepAlive is the MQTT keep-alive interval (default DefaultKeepAlive).
	KeepAlive time.Duration
	// Backoff is the wait before reconnecting after a failed connection attempt,
	// a lost connection or a failed append; it doubles on every attempt that
	// stores nothing, up to MaxBackoff (defaults DefaultBackoff, DefaultMaxBackoff).
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Logger receives the subscriber's logs (default slog.Default()).
	Logger *slog.Logger
}

// Validate reports options that cannot work.
func (o SubscriberOptions) Validate() error {
	if o.BrokerURL == "" {
		return errors.New("mqttin: broker URL is required")
	}
	u, err := url.Parse(o.BrokerURL)
	if err != nil {
		return fmt.Errorf("mqttin: broker URL: %w", err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps", "ws", "wss":
	default:
		return fmt.Errorf("mqttin: broker URL %q: unsupported scheme %q", secret.RedactURL(o.BrokerURL), u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("mqttin: broker URL %q: no host", secret.RedactURL(o.BrokerURL))
	}
	switch {
	case o.MaxPayload < 0:
		return fmt.Errorf("mqttin: max payload %d is negative", o.MaxPayload)
	case o.ConnectTimeout < 0, o.KeepAlive < 0, o.Backoff < 0, o.MaxBackoff < 0:
		return errors.New("mqttin: negative duration in subscriber options")
	case o.MaxBackoff != 0 && o.Backoff > o.MaxBackoff:
		return fmt.Errorf("mqttin: backoff %v exceeds max backoff %v", o.Backoff, o.MaxBackoff)
	}
	return nil
}

func (o SubscriberOptions) withDefaults() SubscriberOptions {
	if o.ClientID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "node"
		}
		o.ClientID = "holdfast-" + host
	}
	if o.Topic == "" {
		o.Topic = DefaultTopic
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.Backoff == 0 {
		o.Backoff = DefaultBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = max(DefaultMaxBackoff, o.Backoff)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Subscriber ingests events from a site's existing broker, acknowledging each
// message only once its event is durable.
type Subscriber struct {
	opts SubscriberOptions
	in   *ingester
	log  *slog.Logger

	connected atomic.Bool
	current   atomic.Pointer[session] // the live, subscribed connection; nil between connections

	mu      sync.Mutex
	started bool               // guarded by mu
	closed  bool               // guarded by mu
	cancel  context.CancelFunc // stops run; set by Start, guarded by mu
	stopped <-chan struct{}    // closed once run is told to stop; set by Start, guarded by mu
	done    chan struct{}      // closed when run returns
}

// NewSubscriber builds a subscriber that hands messages to app and counts them in m
// (nil m: counters not registered anywhere). It does not connect until Start.
func NewSubscriber(opts SubscriberOptions, app ingest.Appender, m *ingest.Metrics) (*Subscriber, error) {
	if app == nil {
		return nil, errors.New("mqttin: nil Appender")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	log := opts.Logger.With("component", "mqtt-subscriber", "broker", secret.RedactURL(opts.BrokerURL), "client_id", opts.ClientID)
	return &Subscriber{
		opts: opts,
		in:   newIngester(app, m, opts.MaxPayload, opts.Limits, log, opts.Admit),
		log:  log,
		done: make(chan struct{}),
	}, nil
}

// Start connects and subscribes in the background and keeps doing so, with
// backoff, until ctx is done or Close is called. It does not wait for the first
// connection: an unreachable broker is retried, not an error.
func (s *Subscriber) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrStarted
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.stopped = ctx.Done()
	go s.run(ctx)
	return nil
}

// Connected reports whether the subscriber has a live, subscribed connection.
func (s *Subscriber) Connected() bool { return s.connected.Load() }

// Close disconnects and returns once every goroutine has ended. Appends still
// waiting are abandoned and their messages left unacknowledged, so the broker
// delivers them again to the next session.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	if started {
		s.cancel()
	}
	s.mu.Unlock()
	if started {
		<-s.done
	}
	return nil
}

// Closed reports whether Close was called or the context given to Start is
// done: Publish then fails.
func (s *Subscriber) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true
	}
	select {
	case <-s.stopped: // nil before Start: never ready
		return true
	default:
		return false
	}
}

// ErrNotConnected is returned by Subscriber.Publish between connections.
var ErrNotConnected = errors.New("mqttin: not connected to the broker")

// Publish sends a message to the site's broker on the subscriber's connection,
// e.g. an alert on holdfast/alerts/...; it satisfies alert.Publisher. With
// qos > 0 it returns once the broker has acknowledged the message, or with an
// error after ConnectTimeout. It fails at once with ErrNotConnected while there
// is no connection, and with ErrDeviceTopic for a topic under devices/ or
// matching the subscribed filter: the node never feeds itself.
func (s *Subscriber) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if isDeviceTopic(topic) || matchFilter(s.opts.Topic, topic) {
		return fmt.Errorf("mqttin: publish to %q: %w", topic, ErrDeviceTopic)
	}
	sess := s.current.Load()
	if sess == nil {
		return fmt.Errorf("mqttin: publish to %q: %w", topic, ErrNotConnected)
	}
	tok := sess.client.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(s.opts.ConnectTimeout) {
		return fmt.Errorf("mqttin: publish to %q: not acknowledged within %v", topic, s.opts.ConnectTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqttin: publish to %q: %w", topic, err)
	}
	return nil
}

// run keeps one connection at a time until ctx is done.
func (s *Subscriber) run(ctx context.Context) {
	defer close(s.done)
	delay := s.opts.Backoff
	for {
		sess, err := s.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("connect failed", "error", err, "retry_in", delay)
		} else {
			s.current.Store(sess)
			s.connected.Store(true)
			s.log.Info("connected")
			var why string
			select {
			case <-ctx.Done():
			case <-sess.failed:
				why = "append failed"
			case <-sess.lost:
				why = "connection lost"
			}
			s.connected.Store(false)
			s.current.Store(nil)
			sess.close()
			if ctx.Err() != nil {
				return
			}
			if sess.stored.Load() > 0 {
				delay = s.opts.Backoff
			}
			s.log.Warn("reconnecting", "reason", why, "retry_in", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, s.opts.MaxBackoff)
	}
}

// connect opens a new client on the persistent session and subscribes if the
// broker has no session for us yet.
func (s *Subscriber) connect(ctx context.Context) (*session, error) {
	sess := &session{failed: make(chan struct{}), lost: make(chan struct{})}
	o := paho.NewClientOptions().
		AddBroker(s.opts.BrokerURL).
		SetClientID(s.opts.ClientID).
		SetUsername(s.opts.Username).
		SetPassword(s.opts.Password).
		SetTLSConfig(s.opts.TLSConfig).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false). // run reconnects, with a fresh client each time
		SetConnectRetry(false).
		SetConnectTimeout(s.opts.ConnectTimeout).
		SetKeepAlive(s.opts.KeepAlive).
		SetOrderMatters(false). // concurrent handlers share group commits
		SetAutoAckDisabled(true).
		// The default handler also gets messages the broker sends from the
		// session before Subscribe would have added a route.
		SetDefaultPublishHandler(func(_ paho.Client, msg paho.Message) { s.handle(ctx, sess, msg) }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.log.Warn("connection lost", "error", err)
			sess.lostOnce.Do(func() { close(sess.lost) })
		})
	sess.client = paho.NewClient(o)

	tok := sess.client.Connect()
	<-tok.Done() // bounded by ConnectTimeout
	if err := tok.Error(); err != nil {
		return nil, err
	}
	if ct, ok := tok.(*paho.ConnectToken); ok && ct.SessionPresent() {
		return sess, nil
	}
	st := sess.client.Subscribe(s.opts.Topic, 1, nil)
	var err error
	switch {
	case !st.WaitTimeout(s.opts.ConnectTimeout):
		err = errors.New("subscribe timed out")
	case st.Error() != nil:
		err = st.Error()
	default:
		if r, ok := st.(*paho.SubscribeToken); ok && r.Result()[s.opts.Topic] == 0x80 {
			err = fmt.Errorf("broker refused subscription to %q", s.opts.Topic)
		}
	}
	if err != nil {
		sess.close()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	return sess, nil
}

// handle stores one message and acknowledges it if it is durable or can never be.
func (s *Subscriber) handle(ctx context.Context, sess *session, msg paho.Message) {
	if !sess.enter() {
		return // this connection is being replaced; the broker redelivers
	}
	defer sess.handlers.Done()
	res := s.in.handle(ctx, msg.Topic(), msg.Payload(), limitNone)
	switch res.outcome {
	case outcomeDurable:
		sess.stored.Add(1)
		msg.Ack()
	case outcomeInvalid, outcomeRefused:
		// Refused under buffer pressure: the site's broker would redeliver
		// an unacknowledged message at once; it is acknowledged and
		// accounted for in the loss ledger.
		s.log.Debug("message rejected", "topic", msg.Topic(), "reason", res.reason, "error", res.err)
		msg.Ack()
	case outcomeUnavailable:
		s.log.Debug("message not stored; reconnecting for redelivery", "topic", msg.Topic(), "error", res.err)
		sess.failOnce.Do(func() { close(sess.failed) })
	}
}

// session is one connection to the broker.
type session struct {
	client   paho.Client
	failed   chan struct{} // closed when an append fails
	failOnce sync.Once
	lost     chan struct{} // closed when paho reports the connection lost
	lostOnce sync.Once
	stored   atomic.Int64 // events made durable on this connection

	mu       sync.Mutex
	draining bool           // no new handlers; guarded by mu
	handlers sync.WaitGroup // running handlers; Add only under mu while !draining
}

func (ss *session) enter() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.draining {
		return false
	}
	ss.handlers.Add(1)
	return true
}

// close lets running handlers finish (so their acks go out on this connection),
// then disconnects. Messages arriving meanwhile are left for redelivery.
func (ss *session) close() {
	ss.mu.Lock()
	ss.draining = true
	ss.mu.Unlock()
	ss.handlers.Wait()
	ss.client.Disconnect(disconnectQuiesce)
}
