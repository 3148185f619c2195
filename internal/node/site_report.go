package node

import (
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/holdfast-edge/holdfast/internal/aggregator"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
)

// SiteAccess is how a node reaches the site aggregator: the site secret as
// its NATS token, site.tls for TLS.
func SiteAccess(s config.Site) (cloud.Access, error) {
	secret, err := s.SecretValue()
	if err != nil {
		return cloud.Access{}, err
	}
	return cloud.Access{Token: secret, CA: s.TLS.CA, Cert: s.TLS.Cert, Key: s.TLS.Key}, nil
}

// startSiteReport reports this node's status to the aggregator every second
// (docs/format/aggregator.md, §4), once every component it reports on runs.
func (n *Node) startSiteReport() {
	primary, syncs := n.siteSync, n.syncs
	var (
		mu    sync.Mutex
		meter loadMeter
	)
	meter.read(n, time.Now())
	n.siteReport = aggregator.StartReporter(aggregator.ReporterOptions{
		URL: n.cfg.Site.Aggregator, Access: n.siteAccess, NodeID: n.cfg.NodeID, Logger: n.log.With("component", "sync"),
		Report: func() aggregator.Report {
			mu.Lock()
			defer mu.Unlock()
			r := aggregator.Report{NodeID: n.cfg.NodeID, HTTP: n.HTTPAddr(), LagRecords: primary.Status().LagRecords}
			r.Load.EventsPerS, r.Load.CPU = meter.read(n, time.Now())
			if n.pressure != nil {
				r.Load.Buffer = n.pressure.utilisation()
			}
			for _, s := range syncs {
				st := s.Status()
				r.Sinks = append(r.Sinks, aggregator.SinkState{Sink: st.Sink, State: string(st.State), LagRecords: st.LagRecords})
			}
			return r
		},
	})
}

// loadMeter turns the node's counters into rates between two of its
// readings: the events ingest accepted per second and this process's share
// of the machine's cores (0–1). Each reader (the site's gossip, the report
// to the aggregator, the degradation level) keeps its own.
type loadMeter struct {
	at       time.Time
	cpu      time.Duration
	accepted uint64
}

// read returns the rates since the last read (zero on the first).
func (m *loadMeter) read(n *Node, now time.Time) (eventsPerSec, cpu float64) {
	c, acc := cpuTime(), n.counters().Accepted
	if el := now.Sub(m.at).Seconds(); !m.at.IsZero() && el > 0 {
		eventsPerSec = float64(acc-min(acc, m.accepted)) / el
		cpu = min(1, (c-m.cpu).Seconds()/el/float64(runtime.NumCPU()))
	}
	m.at, m.cpu, m.accepted = now, c, acc
	return eventsPerSec, cpu
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
