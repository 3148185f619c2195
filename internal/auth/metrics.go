package auth

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Transports, the transport label of the metrics.
const (
	TransportHTTP = "http" // HTTP ingest
	TransportMQTT = "mqtt" // the embedded broker
	TransportAPI  = "api"  // queries, status, admin, /metrics
)

// Metrics counts refused credentials: holdfast_auth_failures_total{transport,
// reason} (reason from Reason) and holdfast_auth_rate_limited_total{transport}.
// A nil *Metrics counts nothing.
type Metrics struct {
	failures *prometheus.CounterVec
	limited  *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg; a nil reg registers nothing.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	return &Metrics{
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_auth_failures_total",
			Help: "Refused authentications by transport (http, mqtt, api) and reason (no_credentials, malformed, unknown, revoked, wrong_device, wrong_kind, forbidden, not_configured, error).",
		}, []string{"transport", "reason"}),
		limited: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_auth_rate_limited_total",
			Help: "Authentication attempts refused unchecked because their source had too many failures.",
		}, []string{"transport"}),
	}
}

// Failure counts a refused authentication over transport; err is what the
// Authenticator returned.
func (m *Metrics) Failure(transport string, err error) {
	if m != nil {
		m.failures.WithLabelValues(transport, Reason(err)).Inc()
	}
}

// RateLimited counts an attempt the Limiter refused.
func (m *Metrics) RateLimited(transport string) {
	if m != nil {
		m.limited.WithLabelValues(transport).Inc()
	}
}

// FailuresFor returns the failure counter of transport and reason (tests, and
// a listener that shows its own count).
func (m *Metrics) FailuresFor(transport, reason string) prometheus.Counter {
	return m.failures.WithLabelValues(transport, reason)
}
