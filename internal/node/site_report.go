package node

import (
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
		mu       sync.Mutex
		lastAt   = time.Now()
		lastNext = n.buf.NextOffset()
		lastCPU  = cpuTime()
	)
	n.siteReport = aggregator.StartReporter(aggregator.ReporterOptions{
		URL: n.cfg.Site.Aggregator, Access: n.siteAccess, NodeID: n.cfg.NodeID, Logger: n.log.With("component", "sync"),
		Report: func() aggregator.Report {
			mu.Lock()
			defer mu.Unlock()
			now, next, cpu := time.Now(), n.buf.NextOffset(), cpuTime()
			secs := now.Sub(lastAt).Seconds()
			r := aggregator.Report{NodeID: n.cfg.NodeID, HTTP: n.HTTPAddr(), LagRecords: primary.Status().LagRecords}
			if secs > 0 {
				r.Load.EventsPerS = float64(next-min(next, lastNext)) / secs
				r.Load.CPU = (cpu - lastCPU).Seconds() / secs
			}
			if n.pressure != nil {
				r.Load.Buffer = n.pressure.utilisation()
			}
			for _, s := range syncs {
				st := s.Status()
				r.Sinks = append(r.Sinks, aggregator.SinkState{Sink: st.Sink, State: string(st.State), LagRecords: st.LagRecords})
			}
			lastAt, lastNext, lastCPU = now, next, cpu
			return r
		},
	})
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
