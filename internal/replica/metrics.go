package replica

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"

	"github.com/prometheus/client_golang/prometheus"
)

// register registers c with reg (nil: none) and returns the collector in use:
// a member that turns from standby to primary and back registers again with
// the same registerer, and keeps counting in the first one.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

// sourceMetrics are the primary's replication metrics.
type sourceMetrics struct {
	replicated  prometheus.Gauge
	fetches     prometheus.Counter
	skipped     prometheus.Counter
	fetchErrors *prometheus.CounterVec
}

func newSourceMetrics(reg prometheus.Registerer) *sourceMetrics {
	return &sourceMetrics{
		replicated: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_ha_replicated_offset",
			Help: "The standby holds every offset below this one durably (its last fetch).",
		})),
		fetches: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_ha_source_fetches_total",
			Help: "Fetches from the standby served by this member.",
		})),
		skipped: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_ha_mirror_skipped_files_total",
			Help: "Mirrored state files not sent because one alone exceeds the reply bound.",
		})),
		fetchErrors: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_ha_source_fetch_errors_total",
			Help: "Fetches this member refused or failed to serve, by reason.",
		}, []string{"reason"})),
	}
}

// followerMetrics are the standby's replication metrics.
type followerMetrics struct {
	lag         prometheus.Gauge
	records     prometheus.Counter
	holes       prometheus.Counter
	fetchErrors *prometheus.CounterVec
}

func newFollowerMetrics(reg prometheus.Registerer) *followerMetrics {
	return &followerMetrics{
		lag: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_ha_replication_lag_records",
			Help: "Offsets the primary holds durably that the standby does not yet (at the last reply).",
		})),
		records: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_ha_replicated_records_total",
			Help: "Records the standby appended from the primary's log, holes included.",
		})),
		holes: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_ha_replicated_holes_total",
			Help: "Hole records the standby wrote where the primary's log holds nothing.",
		})),
		fetchErrors: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_ha_replication_fetch_errors_total",
			Help: "Fetches that failed on the standby, by reason.",
		}, []string{"reason"})),
	}
}

// reason names an error for the fetch error metrics.
func reason(err error) string {
	switch {
	case errors.Is(err, ErrNotPrimary):
		return "not_primary"
	case errors.Is(err, ErrTerm):
		return "term"
	case errors.Is(err, ErrNodeID):
		return "node_id"
	case errors.Is(err, ErrDiverged):
		return "diverged"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrSource):
		return "source"
	case errors.Is(err, nats.ErrNoResponders):
		return "no_responders"
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	return "other"
}
