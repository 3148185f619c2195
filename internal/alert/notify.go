package alert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Notifier delivers alerts to one channel.
type Notifier interface {
	// Name identifies the channel in logs and metrics.
	Name() string
	// Notify delivers a, retrying as the channel's options say. A nil error means
	// delivered. Notify must return promptly once ctx is done.
	Notify(ctx context.Context, a Alert) error
}

// ErrClosed is wrapped by the error of a Notify whose channel was closed with
// the node (the embedded MQTT broker, or the connection to the site's, closes
// before the notifiers do): the alert was not delivered, and not for a reason
// of its own. The Dispatcher then stops that notifier for this run with its
// cursor at the alert, which is delivered after the next start.
var ErrClosed = errors.New("alert: channel closed")

// NewLog returns a notifier that writes alerts to l: firing alerts at warn,
// critical ones at error, resolves at info. A nil l is slog.Default().
func NewLog(l *slog.Logger) Notifier {
	if l == nil {
		l = slog.Default()
	}
	return logNotifier{l: l}
}

type logNotifier struct{ l *slog.Logger }

func (logNotifier) Name() string { return "log" }

func (n logNotifier) Notify(ctx context.Context, a Alert) error {
	level, msg := slog.LevelWarn, "alert firing"
	switch {
	case a.State == Resolved:
		level, msg = slog.LevelInfo, "alert resolved"
	case a.Severity == Critical:
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("id", a.ID),
		slog.String("rule", a.Rule),
		slog.String("severity", string(a.Severity)),
		slog.String("state", string(a.State)),
		slog.String("stream", a.Stream),
		slog.String("device_id", a.DeviceID),
		slog.Float64("value", a.Value),
		slog.Float64("threshold", a.Threshold),
		slog.String("fired_at", formatMS(a.FiredAt)),
	}
	if a.ResolvedAt != 0 {
		attrs = append(attrs, slog.String("resolved_at", formatMS(a.ResolvedAt)))
	}
	n.l.LogAttrs(ctx, level, msg, attrs...)
	return nil
}

// Publisher publishes an MQTT message: the embedded broker (mqttin.Broker,
// which turns mochi's InlineClient option on for it) or, in external mode, the
// connection to the site's broker (mqttin.Subscriber). If it also has a
// method Closed() bool, a failed Publish while Closed reports true is the
// channel closing with the node (ErrClosed), not a failure of the alert.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// DefaultTopicPrefix is where the MQTT notifier publishes when no prefix is set.
const DefaultTopicPrefix = "holdfast/alerts"

// NewMQTT returns a notifier that publishes each alert's JSON, not retained, at
// QoS 1, to "<topicPrefix>/<severity>/<rule>". An empty topicPrefix is
// DefaultTopicPrefix.
func NewMQTT(p Publisher, topicPrefix string) Notifier {
	topicPrefix = strings.TrimSuffix(topicPrefix, "/")
	if topicPrefix == "" {
		topicPrefix = DefaultTopicPrefix
	}
	return mqttNotifier{p: p, prefix: topicPrefix}
}

type mqttNotifier struct {
	p      Publisher
	prefix string
}

func (mqttNotifier) Name() string { return "mqtt" }

func (n mqttNotifier) Notify(_ context.Context, a Alert) error {
	payload, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("mqtt: encode alert %s: %w", a.ID, err)
	}
	topic := n.prefix + "/" + string(a.Severity) + "/" + a.Rule
	if err := n.p.Publish(topic, payload, false, 1); err != nil {
		if c, ok := n.p.(interface{ Closed() bool }); ok && c.Closed() {
			return fmt.Errorf("mqtt: publish %s: %w (%w)", topic, ErrClosed, err)
		}
		return fmt.Errorf("mqtt: publish %s: %w", topic, err)
	}
	return nil
}
