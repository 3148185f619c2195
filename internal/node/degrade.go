package node

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/pace"
	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// degradation follows the node's degradation level (internal/degrade) and
// the seed's scaling triggers from the conditions measured once a second
// (degrade_measure.go), and applies the feature matrix rows built so far:
//
//	raw ingestion   limited: 50 % sample of non-critical streams;
//	                minimal, emergency: critical streams only (the gate,
//	                through admit, every event kept out in the loss ledger)
//	cloud sync      limited: aggregates only (degrade_sync.go);
//	                minimal, emergency: paused; resumes on the step down,
//	                from where it stopped
//	local queries   limited: GET /v1/events (it reads the log) refused with
//	                503 and Retry-After, window results still served;
//	                minimal, emergency: /v1/events and /v1/windows refused
//
// The buffer's pressure enters minimal (critical) and emergency (emergency,
// full, failed) too, for status and the alert; but what the node does about
// a filling buffer is the pressure levels' (pressure.go, DESIGN §7: sampling,
// refusing low priority, evicting, syncing more often), so the actions above
// follow the level computed without the buffer (load): a full disk does not
// stop the sync that would empty it, nor refuse more than pressure does.
//
//	windowing,      limited: live results of degradation.limited_windows
//	alerting        only, rules on the others delayed; minimal, emergency:
//	                no windows, critical event rules only; what is held
//	                back is written on the step down (degrade_process.go)
//
// The level is in status, in the metric
// holdfast_degradation_level, and, from limited on, an alert `degradation`.
type degradation struct {
	gate  *degrade.Gate
	meter *meter // used by the operator goroutine only

	levelGauge   prometheus.Gauge
	changes      *prometheus.CounterVec
	triggerState *prometheus.GaugeVec
	triggerValue *prometheus.GaugeVec

	mu       sync.Mutex
	machine  *degrade.Machine // the level in force, from every condition
	load     *degrade.Machine // the level from all but the buffer: what the actions follow
	triggers *degrade.TriggerSet
	paused   bool   // cloud sync paused by the level
	fired    string // id of the firing degradation alert, "" if none
	firedSev alert.Severity
	scaledUp time.Time // when the triggers last added processing workers (operator goroutine only)

	// pacer rests the background work while the latency trigger is up
	// (fastpath.go).
	pacer *pace.Pacer

	splitSeen    map[string]time.Time // stream → its last hot spot (operator goroutine only)
	splitChanged time.Time            // when the split streams last changed
}

func (n *Node) newDegradation() *degradation {
	f := promauto.With(n.reg)
	d := &degradation{
		gate:     degrade.NewGate(n.streamPriority),
		meter:    newMeter(),
		machine:  degrade.NewMachine(n.cfg.Degradation, time.Now()),
		load:     degrade.NewMachine(n.cfg.Degradation, time.Now()),
		triggers: degrade.NewTriggers(n.cfg.Degradation.Triggers),
		pacer:    pace.New(n.cfg.Degradation.FastPathShare, 0),
		levelGauge: f.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_degradation_level",
			Help: "The node's degradation level: 0 normal, 1 degraded, 2 limited, 3 minimal, 4 emergency.",
		}),
		changes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_degradation_changes_total",
			Help: "Changes of the node's degradation level.",
		}, []string{"from", "to"}),
		triggerState: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "holdfast_trigger_state",
			Help: "Each scaling trigger's state: 1 up, 0 steady, -1 down.",
		}, []string{"metric"}),
		triggerValue: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "holdfast_trigger_value",
			Help: "Each scaling trigger's figure as last measured (cpu, buffer and memory 0–1, queue records, latency seconds).",
		}, []string{"metric"}),
	}
	registerFastPath(f, d.pacer)
	for _, t := range d.triggers.Status() {
		d.triggerState.WithLabelValues(t.Metric).Set(0)
		d.triggerValue.WithLabelValues(t.Metric).Set(0)
	}
	return d
}

// streamPriority is a stream's configured priority, normal if none.
func (n *Node) streamPriority(stream string) string {
	if p := n.cfg.Streams[stream].Priority; p != "" {
		return p
	}
	return "normal"
}

// watchDegradation measures the conditions, feeds the level machine and the
// triggers, and applies a level change. Called every second by the operator.
func (n *Node) watchDegradation(now time.Time) {
	d := n.deg
	if d == nil {
		return
	}
	c, tv := n.measure(now)
	d.mu.Lock()
	ch, changed := d.machine.Observe(c, now)
	lc := c
	lc.Buffer, lc.BufferFailed = pressure.Normal, false
	d.load.Observe(lc, now)
	d.triggers.Observe(tv, now)
	trig := d.triggers.Status()
	act, _ := d.load.Level()
	d.mu.Unlock()
	d.gate.SetLevel(act)
	for _, t := range trig {
		v := map[string]float64{degrade.Up: 1, degrade.Steady: 0, degrade.Down: -1}[t.State]
		d.triggerState.WithLabelValues(t.Metric).Set(v)
		d.triggerValue.WithLabelValues(t.Metric).Set(t.Value)
	}
	n.applySync(act)
	n.applyProcessing(act)
	n.applyWorkers(trig, now)
	n.applyFastPath(trig)
	n.applySpill(trig)
	n.applySplit(now, act)
	n.applyAggregatesOnly(act)
	if !changed {
		return
	}
	d.levelGauge.Set(float64(ch.To))
	d.changes.WithLabelValues(ch.From.String(), ch.To.String()).Inc()
	logf := n.log.Info
	if ch.To > ch.From {
		logf = n.log.Warn
	}
	logf("degradation level changed", "from", ch.From, "to", ch.To, "reasons", strings.Join(ch.Reasons, "; "))
	n.notifyDegradation(ch)
}

// applySync pauses cloud sync at minimal and emergency (without the
// buffer: syncing is what lets the buffer go).
func (n *Node) applySync(level degrade.Level) {
	pause := level >= degrade.Minimal
	d := n.deg
	d.mu.Lock()
	was := d.paused
	d.paused = pause
	d.mu.Unlock()
	if was == pause {
		return
	}
	for _, s := range n.syncs {
		s.SetPaused(pause)
	}
	if pause {
		n.log.Warn("cloud sync paused by the degradation level; it resumes from where it stopped on the step down", "level", level)
	} else {
		n.log.Info("cloud sync resumed", "level", level)
	}
}

// notifyDegradation fires the alert `degradation` on entering limited or
// worse (warning at limited, critical from minimal on), fires it anew when
// its severity changes, and resolves it below limited.
func (n *Node) notifyDegradation(ch degrade.Change) {
	d := n.deg
	sev := alert.Severity("")
	switch {
	case ch.To >= degrade.Minimal:
		sev = alert.Critical
	case ch.To == degrade.Limited:
		sev = alert.Warning
	}
	d.mu.Lock()
	prev, prevSev := d.fired, d.firedSev
	if sev == prevSev {
		d.mu.Unlock()
		return
	}
	var raise []alert.Alert
	at := ch.At.UnixMilli()
	if prev != "" {
		raise = append(raise, alert.Alert{ID: prev, Rule: "degradation", Severity: prevSev, State: alert.Resolved,
			Stream: "*", Value: float64(ch.To), Threshold: float64(degrade.Limited), ResolvedAt: at})
		d.fired, d.firedSev = "", ""
	}
	if sev != "" {
		a := alert.Alert{ID: fmt.Sprintf("degradation/%s/%d", ch.To, at), Rule: "degradation", Severity: sev,
			State: alert.Firing, Stream: "*", Value: float64(ch.To), Threshold: float64(degrade.Limited), FiredAt: at}
		raise = append(raise, a)
		d.fired, d.firedSev = a.ID, sev
	}
	d.mu.Unlock()
	for _, a := range raise {
		n.raise(a)
	}
}

// degradationStatus adds the level and the triggers to s (DESIGN §7).
func (n *Node) degradationStatus(s *api.Status) {
	d := n.deg
	if d == nil {
		return
	}
	d.mu.Lock()
	st := d.machine.Status()
	act, _ := d.load.Level()
	s.Triggers = d.triggers.Status()
	paused := d.paused
	d.mu.Unlock()
	// The row in force: the matrix's for the level the actions follow, less
	// the cells not applied yet.
	row := degrade.Row(degrade.Normal)
	f := degrade.Row(act)
	row.RawIngestion, row.LocalQueries = f.RawIngestion, f.LocalQueries
	n.processingCells(&row)
	if row.RawIngestion == "full" && n.gate.Level() >= pressure.Critical {
		row.RawIngestion = "sample_50" // the buffer's pressure samples (and refuses low priority from emergency)
	}
	if st.Level >= degrade.Degraded && slices.ContainsFunc(st.Reasons, func(r string) bool { return strings.HasPrefix(r, "degraded:") }) {
		row.CloudSync = "queued" // the buffer holds what the cloud has not got
	}
	if n.aggregatesOnly() {
		row.CloudSync = "aggregates_only"
	}
	if paused {
		row.CloudSync = "disabled"
	}
	st.Features = row
	s.Degradation = &st
	if st.Level >= degrade.Limited {
		s.Problems = append(s.Problems, fmt.Sprintf("degradation level %s: %s", st.Level, strings.Join(st.Reasons, "; ")))
	}
}

// degradeQueries refuses local queries the level disables: at limited the
// raw event queries (they read the log; window results are kept in memory
// and still served), from minimal on the event and window queries. Status,
// alerts, metrics and health are always served.
func (n *Node) degradeQueries(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && n.deg != nil {
			n.deg.mu.Lock()
			level, _ := n.deg.load.Level()
			n.deg.mu.Unlock()
			refuse := (level == degrade.Limited && r.URL.Path == "/v1/events") ||
				(level >= degrade.Minimal && (r.URL.Path == "/v1/events" || r.URL.Path == "/v1/windows"))
			if refuse {
				w.Header().Set("Retry-After", "60")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, `{"error":"local queries are %s at degradation level %s","level":%q}`+"\n",
					degrade.Row(level).LocalQueries, level, level.String())
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
