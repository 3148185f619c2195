package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// operator is what the node keeps for its operators beyond its components:
// the alerts it raises about itself (its Board, listed by /v1/alerts), the
// watch that raises sink-offline, and the last hour's samples of its status
// (GET /v1/status/history).
type operator struct {
	board   *alert.Board
	history *api.History
	ingest  *ingest.Metrics // nil until ingest starts
	stop    context.CancelFunc
	done    chan struct{}

	mu sync.Mutex
	// offline holds each sink's firing sink-offline alert. Lock mu.
	offline map[string]alert.Alert
}

func newOperator() *operator {
	return &operator{board: alert.NewBoard(), history: api.NewHistory(), offline: map[string]alert.Alert{}}
}

// raise files a node alert on the board and hands it to the notifiers.
func (n *Node) raise(a alert.Alert) {
	if n.op != nil {
		n.op.board.Record(a)
	}
	if n.disp != nil {
		n.disp.Send(a)
	}
}

// alerts is GET /v1/alerts: the node's own alerts, then the rules'.
func (n *Node) alerts(state, severity string) []alert.Alert {
	out := n.op.board.List(state, severity)
	if n.proc != nil {
		out = append(out, n.proc.Alerts(state, severity)...)
	}
	return out
}

// startOperator watches the sinks every second for sink-offline and
// samples the status every api.HistoryInterval, until Close.
func (n *Node) startOperator() {
	ctx, cancel := context.WithCancel(context.Background())
	n.op.stop, n.op.done = cancel, make(chan struct{})
	go func() {
		defer close(n.op.done)
		n.sample(time.Now())
		watch := time.NewTicker(time.Second)
		defer watch.Stop()
		hist := time.NewTicker(api.HistoryInterval)
		defer hist.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-watch.C:
				n.watchSinks(now)
				n.watchDegradation(now)
			case now := <-hist.C:
				n.sample(now)
			}
		}
	}()
}

func (n *Node) stopOperator() {
	if n.op != nil && n.op.stop != nil {
		n.op.stop()
		<-n.op.done
	}
}

// watchSinks raises sink-offline for a sink offline for
// cloud.offline_alert_after or longer, and resolves it once the sink is
// no longer offline (reachable again, or syncing).
func (n *Node) watchSinks(now time.Time) {
	after := n.cfg.Cloud.OfflineAlertAfter
	for _, s := range n.syncs {
		c := s.Connectivity()
		name := s.Name()
		n.op.mu.Lock()
		a, firing := n.op.offline[name]
		switch {
		case c.State == uplink.Offline && !firing && now.Sub(c.OfflineSince) >= after:
			a = alert.Alert{ID: fmt.Sprintf("sink-offline/%s/%d", name, now.UnixMilli()), Rule: "sink-offline",
				Severity: alert.Warning, State: alert.Firing, Stream: "*", DeviceID: name,
				Value: now.Sub(c.OfflineSince).Seconds(), Threshold: after.Seconds(), FiredAt: now.UnixMilli()}
			n.op.offline[name] = a
			n.op.mu.Unlock()
			n.log.Warn("sink offline too long: alert raised", "sink", name,
				"offline_since", c.OfflineSince.UTC().Format(time.RFC3339), "offline_alert_after", after, "err", c.LastError)
			n.raise(a)
		case c.State != uplink.Offline && firing:
			delete(n.op.offline, name)
			n.op.mu.Unlock()
			a.State, a.ResolvedAt, a.Value = alert.Resolved, now.UnixMilli(), 0
			n.raise(a)
		default:
			n.op.mu.Unlock()
		}
	}
}

// counters are ingest's running totals.
func (n *Node) counters() api.Counters {
	if n.op.ingest == nil {
		return api.Counters{}
	}
	acc, acks, t := n.op.ingest.Totals()
	return api.Counters{Accepted: acc, Acks: acks, AckTime: t}
}

// sample adds a point to the history.
func (n *Node) sample(now time.Time) {
	s := n.Status()
	p := api.Sample{
		At: now.UTC(), BufferUtilisation: s.Buffer.Utilisation, PendingBytes: s.Buffer.PendingBytes,
		BufferLevel: s.Buffer.Level, AlertsFiring: len(s.FiringAlerts),
	}
	for _, a := range s.Sinks {
		st, ok := a.(uplink.SinkStatus)
		if !ok {
			continue
		}
		p.SyncLagRecords = max(p.SyncLagRecords, st.LagRecords)
		p.OldestUnsyncedSeconds = max(p.OldestUnsyncedSeconds, st.OldestUnsyncedSeconds)
		if st.State != uplink.Connected {
			p.SinksNotConnected++
		}
	}
	if ps, ok := s.Processing.(process.Status); ok {
		p.ProcessingLagRecords = ps.Lag
	}
	for _, byStream := range s.Losses {
		for _, v := range byStream {
			p.Losses += v
		}
	}
	n.op.history.Add(p, n.counters())
}

// operatorStatus adds to s what the operator keeps: ingest's rates, the
// firing alerts, and a problem for each sink that is not connected.
func (n *Node) operatorStatus(s *api.Status) {
	if n.op == nil {
		return
	}
	c := n.counters()
	rate, ack := n.op.history.Rates(time.Now(), c)
	s.Ingest = &api.IngestStatus{RatePerSecond: rate, AckMeanSeconds: ack, AcceptedTotal: c.Accepted}
	s.FiringAlerts = n.alerts(string(alert.Firing), "")
	if s.FiringAlerts == nil {
		s.FiringAlerts = []alert.Alert{}
	}
	for _, sy := range n.syncs {
		c := sy.Connectivity()
		switch c.State {
		case uplink.Offline:
			s.Problems = append(s.Problems, fmt.Sprintf("sink %s offline since %s: %s",
				sy.Name(), c.OfflineSince.UTC().Format(time.RFC3339), c.LastError))
		case uplink.Degraded:
			p := "sink " + sy.Name() + " degraded"
			if c.LastError != "" {
				p += ": " + c.LastError
			}
			s.Problems = append(s.Problems, p)
		}
	}
}
