package leader

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	role          *prometheus.GaugeVec
	term          prometheus.Gauge
	takeovers     prometheus.Counter
	renewFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		role: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "holdfast_ha_role",
			Help: "1 for this member's current HA role (primary, standby, candidate), 0 for the others.",
		}, []string{"role"}),
		term: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_ha_term",
			Help: "The term of the leader record this member last read or wrote.",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_ha_takeovers_total",
			Help: "Terms this member began by taking over from another primary.",
		}),
		renewFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_ha_lease_renew_failures_total",
			Help: "Renewals of the primary's lease that failed (timeouts, no quorum).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.role, m.term, m.takeovers, m.renewFailures)
	}
	return m
}

func (m *metrics) setRole(r Role) {
	for _, x := range []Role{Primary, Standby, Candidate} {
		v := 0.0
		if x == r {
			v = 1
		}
		m.role.WithLabelValues(string(x)).Set(v)
	}
}
