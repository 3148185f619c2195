package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/holdfast-edge/holdfast/internal/secret"
)

// MQTTSinkOptions configure the MQTT bridge sink. Zero fields take the
// defaults.
type MQTTSinkOptions struct {
	BrokerURL string // tcp://host:1883, ssl://host:8883, ws://…
	ClientID  string // default "holdfast-bridge-<node_id>"
	Username  string
	Password  string
	// TLSConfig is used for ssl:// and tls:// brokers: a CA to trust, a
	// client certificate. Nil: the system's roots.
	TLSConfig *tls.Config
	NodeID    string
	Name      string // sink name, default "mqtt"
	// TopicPrefix is the first topic level, default "holdfast".
	TopicPrefix string
}

// Validate reports every option that cannot work.
func (o MQTTSinkOptions) Validate() error {
	var errs []error
	if o.BrokerURL == "" {
		errs = append(errs, errors.New("uplink: mqtt sink: broker url is empty"))
	}
	if o.NodeID == "" {
		errs = append(errs, errors.New("uplink: mqtt sink: node id is empty"))
	}
	if strings.ContainsAny(o.TopicPrefix, "+#") {
		errs = append(errs, fmt.Errorf("uplink: mqtt sink: topic prefix %q holds a wildcard", o.TopicPrefix))
	}
	return errors.Join(errs...)
}

// mqttTimeout bounds connecting, handing a publish to the network and the
// disconnect on Close.
const mqttTimeout = 10 * time.Second

// MQTTSink publishes every record, QoS 1, to a broker as docs/format/sinks.md
// lays out: one message per record on <prefix>/<node_id>/<kind>/<stream>,
// carrying the record's JSON line. A batch is confirmed when the broker has
// acknowledged every message of it. Anything the broker may already hold is
// sent again after a failure; receivers dedup by node_id and offset.
// paho.mqtt.golang does the protocol.
type MQTTSink struct {
	o MQTTSinkOptions

	// Used by the syncer's goroutine only (Close runs after the syncer stops).
	client paho.Client
	lost   chan struct{} // closed when the current connection is lost
	broken bool          // a Send failed on the current connection
	line   []byte
}

// NewMQTTSink returns a sink, or the options' Validate error; it connects on
// the first Resume.
func NewMQTTSink(o MQTTSinkOptions) (*MQTTSink, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = "mqtt"
	}
	if o.ClientID == "" {
		o.ClientID = "holdfast-bridge-" + o.NodeID
	}
	if o.TopicPrefix == "" {
		o.TopicPrefix = "holdfast"
	}
	return &MQTTSink{o: o}, nil
}

func (s *MQTTSink) Name() string { return s.o.Name }

// Probe dials the broker's host (Prober).
func (s *MQTTSink) Probe(ctx context.Context) error { return dialProbe(ctx, s.o.BrokerURL) }

// connected reports whether the current connection is up.
func (s *MQTTSink) connected() bool {
	if s.client == nil {
		return false
	}
	select {
	case <-s.lost:
		return false
	default:
		return s.client.IsConnected()
	}
}

// Resume connects to the broker unless the connection is up and no Send
// failed on it. After a failure it drops the old connection and dials again:
// paho's own reconnect is off so that the syncer sees every outage and resends
// what was not acknowledged.
func (s *MQTTSink) Resume(ctx context.Context, _ map[Lane]uint64, _ map[string]uint64) error {
	if s.connected() && !s.broken {
		return nil
	}
	s.disconnect()
	lost := make(chan struct{})
	opts := paho.NewClientOptions().
		AddBroker(s.o.BrokerURL).
		SetClientID(s.o.ClientID).
		SetUsername(s.o.Username).
		SetPassword(s.o.Password).
		SetTLSConfig(s.o.TLSConfig).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(mqttTimeout).
		SetWriteTimeout(mqttTimeout).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	c := paho.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		c.Disconnect(0)
		return fmt.Errorf("connect to %s: %w", secret.RedactURL(s.o.BrokerURL), ctx.Err())
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("connect to %s: %w", secret.RedactURL(s.o.BrokerURL), err)
	}
	s.client, s.lost, s.broken = c, lost, false
	return nil
}

// Send publishes recs and waits until the broker has acknowledged every one.
// Every error is retryable, but for a record that cannot be encoded.
func (s *MQTTSink) Send(ctx context.Context, recs []Record) (err error) {
	defer func() {
		if err != nil && !IsPermanent(err) {
			s.broken = true
		}
	}()
	if !s.connected() {
		return errors.New("not connected to the broker")
	}
	toks := make([]paho.Token, 0, len(recs))
	offs := make([]uint64, 0, len(recs))
	for _, r := range recs {
		line, err := appendJSONLine(s.line[:0], s.o.NodeID, r)
		if err != nil {
			return Permanent(err)
		}
		s.line = line
		payload := line[:len(line)-1] // one message, no newline
		// paho keeps the payload until the message is acknowledged: hand it a copy.
		tok := s.client.Publish(MQTTTopic(s.o.TopicPrefix, s.o.NodeID, r), 1, false, append([]byte(nil), payload...))
		toks = append(toks, tok)
		offs = append(offs, r.Offset)
	}
	// With a persistent session and paho's reconnect off, paho keeps the
	// tokens of unacknowledged publishes when the connection drops (to resend
	// them on a reconnect that never comes): they never complete. Watch the
	// connection, or every lost connection costs a whole SendTimeout.
	for i, tok := range toks {
		select {
		case <-tok.Done():
		case <-s.lost:
			return fmt.Errorf("connection to the broker lost with record %d unacknowledged", offs[i])
		case <-ctx.Done():
			return fmt.Errorf("waiting for the broker's acknowledgements: %w", ctx.Err())
		}
		if err := tok.Error(); err != nil {
			return fmt.Errorf("record %d not acknowledged: %w", offs[i], err)
		}
	}
	return nil
}

// Positions returns nil: the MQTT sink saves no positions.
func (s *MQTTSink) Positions() map[string]uint64 { return nil }

// Close disconnects from the broker.
func (s *MQTTSink) Close() error {
	s.disconnect()
	return nil
}

func (s *MQTTSink) disconnect() {
	if s.client != nil {
		s.client.Disconnect(uint(mqttTimeout / time.Millisecond))
		s.client, s.lost = nil, nil
	}
}

// MQTTTopic is the topic a record is published on:
// <prefix>/<node_id>/<kind>/<stream>, node id and stream escaped by
// EscapeTopicLevel.
func MQTTTopic(prefix, nodeID string, r Record) string {
	return prefix + "/" + EscapeTopicLevel(nodeID) + "/" + kindOf(r.Type) + "/" + EscapeTopicLevel(r.Stream)
}

// EscapeTopicLevel makes s one MQTT topic level free of wildcards: '%', '/',
// '+' and '#' become %25, %2F, %2B and %23; nothing else changes.
func EscapeTopicLevel(s string) string {
	if !strings.ContainsAny(s, "%/+#") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%', '/', '+', '#':
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
