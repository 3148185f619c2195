package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/pace"
)

// applyFastPath is the latency trigger's action, "prioritize the fast path:
// critical streams and acks first": while the trigger is up, the processor's
// reader and workers and the cloud sync of every lane but the critical one
// take at most degradation.fast_path_share of one core (internal/pace),
// which leaves
// the rest of the CPU to the ingest handlers and the group commit. The acks,
// the group commit and the critical lane are never paced. What the paced
// work leaves behind shows as processing and sync lag and is caught up once
// the trigger is down. Called by the operator goroutine.
func (n *Node) applyFastPath(trig []degrade.TriggerStatus) {
	on := false
	for _, t := range trig {
		if t.Metric == "latency" {
			on = t.State == degrade.Up
		}
	}
	if !n.deg.pacer.SetOn(on) {
		return
	}
	if on {
		n.log.Warn("ack latency trigger up: background work paced to give acks the CPU",
			"share", n.deg.pacer.Share())
	} else {
		n.log.Info("ack latency trigger down: background work no longer paced")
	}
}

// registerFastPath exports how long the fast path has rested background work.
func registerFastPath(f promauto.Factory, p *pace.Pacer) {
	f.NewCounterFunc(prometheus.CounterOpts{
		Name: "holdfast_fast_path_rest_seconds_total",
		Help: "Time background goroutines (processing reader, non-critical sync) rested while the latency trigger was up, summed over goroutines.",
	}, func() float64 { d, _ := p.Rested(); return d.Seconds() })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "holdfast_fast_path_active",
		Help: "1 while the latency trigger's action paces background work, else 0.",
	}, func() float64 {
		if p.On() {
			return 1
		}
		return 0
	})
}
