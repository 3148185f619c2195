package mqttin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/ingest/ratelimit"
)

const (
	// TopicPrefix starts every topic that carries device events.
	TopicPrefix = "devices/"

	// DefaultMaxPayload is the largest payload accepted by default.
	DefaultMaxPayload = 64 << 10

	transport = "mqtt"
)

// Rejection reasons set by this package (payload reasons come from event.Error).
const (
	reasonBadTopic    = "bad_topic"
	reasonTooLarge    = "too_large"
	reasonUnavailable = "unavailable"
	reasonInvalid     = "invalid" // a decode error that is not an *event.Error
)

// outcome is what became of one message.
type outcome int

const (
	outcomeDurable     outcome = iota // stored or a duplicate: acknowledge
	outcomeInvalid                    // bad topic or payload: can never succeed
	outcomeUnavailable                // the Appender failed: do not acknowledge
	outcomeClosing                    // the transport is shutting down: do not acknowledge
	outcomeRefused                    // kept out by the buffer's pressure: MQTT 5 quota exceeded
	outcomeLimited                    // over the device's rate limit: MQTT 5 quota exceeded
)

// limitMode is how a message over its device's rate limit is treated.
type limitMode int

const (
	limitNone   limitMode = iota // not limited (the Subscriber: one connection for every device)
	limitRefuse                  // refused: MQTT 5, which has a negative ack
	limitHold                    // held, then stored: MQTT 3.1.1, which has none
)

// DefaultMaxHold bounds how long an MQTT 3.1.1 message over its device's
// rate limit is held before it is stored anyway.
const DefaultMaxHold = 5 * time.Second

// reasonRateLimited is the rejection reason of a message over its device's rate limit.
const reasonRateLimited = "rate_limited"

// result is the outcome of one message and, if it was refused, why.
type result struct {
	outcome outcome
	reason  string // metric label when outcomeInvalid
	err     error
	retry   time.Duration // outcomeLimited: until the device's next token
}

// ingester turns one MQTT message into one Append call and keeps the counters.
// It is shared by the Broker hook and the Subscriber and is safe for concurrent use.
type ingester struct {
	app        ingest.Appender
	maxPayload int
	admit      func(stream string) string // nil admits every event
	limits     event.Limits
	log        *slog.Logger
	now        func() time.Time
	failing    atomic.Bool        // the last Append failed
	limiter    *ratelimit.Limiter // per-device rate limit; nil: none
	maxHold    time.Duration      // longest hold of a 3.1.1 message over the limit

	metrics    *ingest.Metrics
	transport  string
	accepted   prometheus.Counter
	duplicates prometheus.Counter
	rejected   *prometheus.CounterVec
}

func newIngester(app ingest.Appender, m *ingest.Metrics, maxPayload int, lim event.Limits, log *slog.Logger,
	admit func(stream string) string) *ingester {
	if m == nil {
		m = ingest.NewMetrics(nil)
	}
	return &ingester{
		app:        app,
		maxPayload: maxPayload,
		admit:      admit,
		limits:     lim,
		log:        log,
		now:        time.Now,
		metrics:    m,
		transport:  transport,
		accepted:   m.Accepted.WithLabelValues(transport),
		duplicates: m.Duplicates.WithLabelValues(transport),
		rejected:   m.Rejected.MustCurryWith(prometheus.Labels{"transport": transport}),
	}
}

// isDeviceTopic reports whether a topic is meant for ingestion.
func isDeviceTopic(topic string) bool { return strings.HasPrefix(topic, TopicPrefix) }

// matchFilter reports whether topic matches the MQTT topic filter, with its
// + and # wildcards. As MQTT requires, a filter starting with a wildcard does
// not match a topic starting with $.
func matchFilter(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		switch {
		case f == "#":
			return true
		case i >= len(ts):
			return false
		case f != "+" && f != ts[i]:
			return false
		}
	}
	return len(fs) == len(ts)
}

// parseTopic splits devices/{device_id}/{stream}.
func parseTopic(topic string) (deviceID, stream string, err error) {
	rest, ok := strings.CutPrefix(topic, TopicPrefix)
	if !ok {
		return "", "", fmt.Errorf("topic %q: not under %s", topic, TopicPrefix)
	}
	deviceID, stream, ok = strings.Cut(rest, "/")
	if !ok || strings.Contains(stream, "/") {
		return "", "", fmt.Errorf("topic %q: want devices/{device_id}/{stream}", topic)
	}
	if why := event.ValidName(deviceID); why != "" {
		return "", "", fmt.Errorf("topic %q: device_id: %s", topic, why)
	}
	if why := event.ValidName(stream); why != "" {
		return "", "", fmt.Errorf("topic %q: stream: %s", topic, why)
	}
	return deviceID, stream, nil
}

// handle decodes one message and appends its event, returning once the event is
// durable or refused. ctx is the transport's lifetime. mode says what to do
// with a message over its device's rate limit: refuse it (outcomeLimited),
// or hold it until the device is back under its limit, at most maxHold,
// then store it.
func (in *ingester) handle(ctx context.Context, topic string, payload []byte, mode limitMode) result {
	ev, res, ok := in.prepare(ctx, topic, payload, mode)
	if !ok {
		return res
	}
	start := time.Now()
	return in.commit(ctx, []event.Event{ev}, []time.Time{start})
}

// prepare decodes one message and applies the pressure and rate-limit gates:
// ok with the event to append, or the message's outcome.
func (in *ingester) prepare(ctx context.Context, topic string, payload []byte, mode limitMode) (event.Event, result, bool) {
	deviceID, stream, err := parseTopic(topic)
	if err != nil {
		return event.Event{}, in.reject(reasonBadTopic, err), false
	}
	if len(payload) > in.maxPayload {
		return event.Event{}, in.reject(reasonTooLarge, fmt.Errorf("payload of %d bytes exceeds the limit of %d", len(payload), in.maxPayload)), false
	}
	ev, err := event.ParseMQTT(deviceID, stream, payload, in.now(), in.limits)
	if err != nil {
		reason := reasonInvalid
		if e, ok := errors.AsType[*event.Error](err); ok {
			reason = string(e.Reason)
		}
		return event.Event{}, in.reject(reason, err), false
	}
	if in.admit != nil {
		if why := in.admit(ev.Stream); why != "" {
			in.rejected.WithLabelValues(why).Inc()
			return event.Event{}, result{outcome: outcomeRefused, reason: why,
				err: fmt.Errorf("stream %q: not stored, the buffer is under pressure (%s)", ev.Stream, why)}, false
		}
	}
	switch {
	case in.limiter == nil || mode == limitNone:
	case mode == limitRefuse:
		if ok, retry := in.limiter.Allow(in.transport, ev.DeviceID, ev.Stream); !ok {
			in.rejected.WithLabelValues(reasonRateLimited).Inc()
			r, b := in.limiter.Rate()
			retry = max(retry, time.Millisecond)
			return event.Event{}, result{outcome: outcomeLimited, reason: reasonRateLimited, retry: retry,
				err: fmt.Errorf("device %q over its rate limit of %g events/s (burst %d): not stored, send it again in %s",
					ev.DeviceID, r, b, retry.Round(time.Millisecond))}, false
		}
	case mode == limitHold:
		// On the client's read goroutine: its next messages wait too.
		if !clock.Sleep(ctx, in.limiter.Hold(in.transport, ev.DeviceID, ev.Stream, in.maxHold)) {
			return event.Event{}, result{outcome: outcomeClosing, err: ctx.Err()}, false
		}
	}
	return ev, result{}, true
}

// slowRefused is called on the client's read goroutine after a message over
// its device's rate limit was refused (MQTT 5) and its 0x97 queued: the
// connection is read again only once the device has a token, at most
// maxHold later. A device that ignores its 0x97s and keeps sending is so
// taken in at about its rate, as a held 3.1.1 device is, and does not make
// the node read, parse and answer its flood message by message; one within
// its limit never waits. Like a hold, the wait is the connection's: a
// gateway publishing for several devices over it waits as a whole.
func (in *ingester) slowRefused(ctx context.Context, res result) {
	if res.outcome == outcomeLimited {
		clock.Sleep(ctx, min(res.retry, in.maxHold))
	}
}

// commit appends events prepared from one connection's messages, in order,
// with one Append (one group commit): the outcome holds for them all. starts
// are when each message was taken in, for the ack latency.
func (in *ingester) commit(ctx context.Context, evs []event.Event, starts []time.Time) result {
	res, err := in.app.Append(ctx, evs)
	if err != nil {
		if ctx.Err() != nil {
			return result{outcome: outcomeClosing, err: err}
		}
		in.rejected.WithLabelValues(reasonUnavailable).Add(float64(len(evs)))
		if !in.failing.Swap(true) {
			in.log.Warn("storage unavailable: MQTT messages are not acknowledged", "error", err)
		}
		return result{outcome: outcomeUnavailable, reason: reasonUnavailable, err: err}
	}
	if in.failing.Swap(false) {
		in.log.Info("storage available again: MQTT messages are acknowledged")
	}
	now := time.Now()
	for _, s := range starts {
		in.metrics.ObserveAck(in.transport, 1, now.Sub(s))
	}
	in.accepted.Add(float64(res.Stored + res.Duplicates))
	if res.Duplicates > 0 {
		in.duplicates.Add(float64(res.Duplicates))
	}
	return result{outcome: outcomeDurable}
}

func (in *ingester) reject(reason string, err error) result {
	in.rejected.WithLabelValues(reason).Inc()
	return result{outcome: outcomeInvalid, reason: reason, err: err}
}
