package process

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the processor's Prometheus metrics.
type Metrics struct {
	Events        prometheus.Counter
	Late          *prometheus.CounterVec // by stream
	WindowsClosed prometheus.Counter
	Alerts        *prometheus.CounterVec // by severity and state
}

// NewMetrics creates the processor metrics and registers them with reg if it
// is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_process_events_total",
			Help: "Events processed by windowing and alert rules (replays included).",
		}),
		Late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_process_late_events_total",
			Help: "Events that arrived after a window they belong to had closed; kept raw and flagged.",
		}, []string{"stream"}),
		WindowsClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_windows_written_total",
			Help: "Window results written to the log.",
		}),
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_alerts_written_total",
			Help: "Alert state changes written to the log, by severity and state.",
		}, []string{"severity", "state"}),
	}
	if reg != nil {
		reg.MustRegister(m.Events, m.Late, m.WindowsClosed, m.Alerts)
	}
	return m
}
