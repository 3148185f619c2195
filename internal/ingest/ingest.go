// Package ingest is the hand-off between the transports (httpin, mqttin) and the
// buffer: transports decode and validate, then call an Appender, which returns only
// once the events are durable. Nothing in a transport touches storage.
package ingest

import (
	"context"
	"errors"

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
	}
	if reg != nil {
		reg.MustRegister(m.Accepted, m.Rejected, m.Duplicates)
	}
	return m
}
