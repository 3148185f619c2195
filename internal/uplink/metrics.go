package uplink

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics exports the connectivity and breaker state of every sink.
// Connectivity states (connected, degraded, offline) and breaker states
// (closed, open, half-open) have disjoint names, so the from and to labels of
// holdfast_sync_transitions_total say which machine moved.
type Metrics struct {
	connState    *prometheus.GaugeVec
	breakerState *prometheus.GaugeVec
	transitions  *prometheus.CounterVec
	failures     *prometheus.CounterVec
	synced       *prometheus.CounterVec
	reg          prometheus.Registerer
}

// NewMetrics registers the sync metrics with reg; a nil reg registers nothing.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		reg: reg,
		connState: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "holdfast_sync_connectivity_state",
			Help: "1 for the sink's current connectivity state (connected, degraded, offline), 0 for the others.",
		}, []string{"sink", "state"}),
		breakerState: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "holdfast_sync_breaker_state",
			Help: "1 for the sink's current circuit breaker state (closed, open, half-open), 0 for the others.",
		}, []string{"sink", "state"}),
		transitions: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_sync_transitions_total",
			Help: "State changes of the sink's connectivity machine and circuit breaker.",
		}, []string{"sink", "from", "to"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_sync_failures_total",
			Help: "Failed syncs reported to the sink's connectivity machine.",
		}, []string{"sink"}),
		synced: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_sync_records_total",
			Help: "Records the sink confirmed.",
		}, []string{"sink"}),
	}
}

// Track keeps the metrics of sink true to c and b from now on: their current
// states, each transition, and each failure reported to c. Either may be nil.
// Call it before b is used: a breaker transition racing with Track may leave
// the breaker gauge one change behind until the next.
func (m *Metrics) Track(sink string, c *Connectivity, b *Breaker) {
	if c != nil {
		failures := m.failures.WithLabelValues(sink)
		c.watch(
			func(s State) { m.setConn(sink, s) },
			func(from, to State, _ time.Time) {
				m.transitions.WithLabelValues(sink, string(from), string(to)).Inc()
				m.setConn(sink, to)
			},
			func(error) { failures.Inc() },
		)
	}
	if b != nil {
		b.addHook(func(from, to string) {
			m.transitions.WithLabelValues(sink, from, to).Inc()
			m.setBreaker(sink, to)
		})
		m.setBreaker(sink, b.State())
	}
}

// trackLag exports a sink's backlog, read from status at each scrape:
// holdfast_sync_lag_records, holdfast_sync_lag_bytes and
// holdfast_sync_oldest_unsynced_seconds.
func (m *Metrics) trackLag(sink string, status func() SinkStatus) {
	if m.reg == nil {
		return
	}
	labels := prometheus.Labels{"sink": sink}
	f := promauto.With(m.reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_sync_lag_records", ConstLabels: labels,
		Help: "Log records not yet confirmed by the sink, in its slowest lane."},
		func() float64 { return float64(status().LagRecords) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_sync_lag_bytes", ConstLabels: labels,
		Help: "Estimated log bytes not yet confirmed by the sink, in its slowest lane."},
		func() float64 { return float64(status().LagBytes) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_sync_oldest_unsynced_seconds", ConstLabels: labels,
		Help: "Age of the oldest event the sink has not confirmed; 0 when nothing waits."},
		func() float64 { return status().OldestUnsyncedSeconds })
}

// trackLink exports which of a sink's links is in use, read at each scrape:
// holdfast_sync_link{sink,link} is 1 for the link in use, 0 for the others.
func (m *Metrics) trackLink(sink string, ln Linked) {
	if m.reg == nil {
		return
	}
	f := promauto.With(m.reg)
	seen := map[string]bool{}
	for i, l := range ln.Links() {
		name := l.URL
		if seen[name] { // two links that differ only in a secret
			name = fmt.Sprintf("%s (%d)", name, i+1)
		}
		seen[name] = true
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: "holdfast_sync_link",
			ConstLabels: prometheus.Labels{"sink": sink, "link": name},
			Help:        "1 for the link the sink uses (or last used), 0 for its other links."},
			func() float64 { return b2f(ln.LinkInUse() == i) })
	}
}

func (m *Metrics) setConn(sink string, cur State) {
	for _, s := range States {
		m.connState.WithLabelValues(sink, string(s)).Set(b2f(s == cur))
	}
}

func (m *Metrics) setBreaker(sink, cur string) {
	for _, s := range BreakerStates {
		m.breakerState.WithLabelValues(sink, s).Set(b2f(s == cur))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
