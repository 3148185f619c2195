// Package ingest is the hand-off between the transports (httpin, mqttin) and the
// buffer: transports decode and validate, then call an Appender, which returns only
// once the events are durable. Nothing in a transport touches storage.
package ingest

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// ErrUnavailable is returned by an Appender that cannot make events durable right
// now (the log writer has failed, or the node is shutting down). Transports answer
// it with "try again later" (HTTP 503; MQTT 5 PUBACK reason 0x83, MQTT 3.1.1 no
// PUBACK and the connection closed, so the client resends).
var ErrUnavailable = errors.New("ingest: storage unavailable")

// Appender stores validated events.
type Appender interface {
	// Append returns once every event in evs is durable (fsync'd), or with an
	// error, in which case none of them may be acknowledged. An event whose
	// device already sent the same id within the de-duplication window is not
	// stored again; it counts in Result.Duplicates and is durable all the same.
	// So is an id-less event with the device's own ts whose device, stream,
	// ts, value and tags were stored within the window, unless
	// ingest.dedup_without_id is off (docs/format/dedup.md).
	// Append sets each event's Received time if it is zero.
	Append(ctx context.Context, evs []event.Event) (Result, error)
}

// Result says what Append did with a batch.
type Result struct {
	Stored     int // new records written
	Duplicates int // retries of events already stored
}

// Metrics are the ingest counters shared by all transports.
type Metrics struct {
	Accepted   *prometheus.CounterVec // by transport
	Rejected   *prometheus.CounterVec // by transport and reason
	Duplicates *prometheus.CounterVec // by transport
	// AckSeconds is the time from handing a batch to the Appender to its
	// acknowledgement (durable: fsynced, and on an HA primary held by the
	// standby), by transport: holdfast_ingest_ack_seconds.
	AckSeconds *prometheus.HistogramVec

	// Totals over every transport since start, for the status page's rates.
	accepted, acks, ackNanos atomic.Uint64
}

// ObserveAck records that n events of transport were acknowledged d after
// they were handed to the Appender.
func (m *Metrics) ObserveAck(transport string, n int, d time.Duration) {
	m.AckSeconds.WithLabelValues(transport).Observe(d.Seconds())
	m.accepted.Add(uint64(n))
	m.acks.Add(1)
	m.ackNanos.Add(uint64(max(d, 0)))
}

// Totals returns, since start and over every transport, the events
// acknowledged, the acknowledgements (batches), and their summed latency.
func (m *Metrics) Totals() (events, acks uint64, ackTime time.Duration) {
	return m.accepted.Load(), m.acks.Load(), time.Duration(m.ackNanos.Load())
}

// NewMetrics creates the ingest counters and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_events_accepted_total",
			Help: "Events acknowledged as durable, by transport (duplicates included).",
		}, []string{"transport"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_events_rejected_total",
			Help: "Events refused before storage, by transport and reason.",
		}, []string{"transport", "reason"}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_events_duplicate_total",
			Help: "Device retries acknowledged without being stored again, by transport.",
		}, []string{"transport"}),
		AckSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "holdfast_ingest_ack_seconds",
			Help:    "Time from a batch's hand-over to storage to its acknowledgement (durable), by transport.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"transport"}),
	}
	if reg != nil {
		reg.MustRegister(m.Accepted, m.Rejected, m.Duplicates, m.AckSeconds)
	}
	return m
}
