package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// pressureWatch follows the buffer's utilisation as the seed's pressure
// levels (internal/pressure): in status and metrics, in the log, as an alert
// to the notifiers at every change, in the sync (from warning on: more often,
// compressing harder), at ingest through the node's gate (sampling from
// critical, refusing low-priority streams from emergency), and on the buffer
// itself (evict.go): evicting synced records from critical on, downsampling
// from emergency, dropping the oldest pending records when full.
//
// Utilisation is the share of buffer.max_bytes taken by pending records, those
// some sink has not confirmed yet (evict.go, utilisation): the records the
// node cannot let go without a loss. A node without sinks has none; its
// buffer keeps the newest max_bytes of history, and retention deletes the
// oldest as always.
type pressureWatch struct {
	n       *Node
	stop    chan struct{}
	done    chan struct{}
	level   *prometheus.GaugeVec
	moves   *prometheus.CounterVec
	evicted prometheus.Counter

	// nothingSynced is what the last look for synced records depended on,
	// if it found none (evict.go). Used by the watch goroutine only.
	nothingSynced syncedKey
	// unfinished is the removing mark of the first removal that failed in
	// this process, 0 if none (evict.go). Used by the watch goroutine only.
	unfinished uint64

	mu    sync.Mutex
	mon   *pressure.Monitor
	fired string // id of the firing pressure alert, "" if none
}

// pressureEvery is how often the buffer's utilisation is looked at.
const pressureEvery = time.Second

func (n *Node) startPressure() error {
	t := n.cfg.Buffer.Pressure
	if err := t.Validate(); err != nil {
		return fmt.Errorf("buffer.pressure: %w", err)
	}
	f := promauto.With(n.reg)
	w := &pressureWatch{
		n: n, stop: make(chan struct{}), done: make(chan struct{}), mon: pressure.NewMonitor(t, time.Now()),
		level: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "holdfast_buffer_pressure_level",
			Help: "1 for the buffer's current pressure level (normal, warning, critical, emergency, full), 0 for the others.",
		}, []string{"level"}),
		moves: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_buffer_pressure_changes_total",
			Help: "Changes of the buffer's pressure level.",
		}, []string{"from", "to"}),
		evicted: f.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_buffer_evicted_synced_records_total",
			Help: "Records every sink had confirmed, deleted early because the buffer was under pressure (critical or worse).",
		}),
	}
	w.setGauge(pressure.Normal)
	n.pressure = w
	w.check() // the level at start-up, before the first tick
	go w.run()
	return nil
}

func (w *pressureWatch) run() {
	defer close(w.done)
	t := time.NewTicker(pressureEvery)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.check()
		}
	}
}

func (w *pressureWatch) close() {
	close(w.stop)
	<-w.done
}

func (w *pressureWatch) setGauge(cur pressure.Level) {
	for l := pressure.Normal; l <= pressure.Full; l++ {
		v := 0.0
		if l == cur {
			v = 1
		}
		w.level.WithLabelValues(l.String()).Set(v)
	}
}

// check reads the utilisation, reports a level change and carries out the
// level's actions (evict.go).
func (w *pressureWatch) check() {
	if w.maxBytes() <= 0 {
		return
	}
	u := w.utilisation()
	if w.n.buf.Err() != nil {
		// A buffer that failed (a disk error) takes nothing more until the
		// node restarts: the full level, with its alert.
		u = max(u, 1)
	}
	w.mu.Lock()
	c, changed := w.mon.Observe(u, time.Now())
	level, _ := w.mon.Level()
	w.mu.Unlock()
	if changed {
		w.changed(c, u)
	}
	w.act(level)
}

// changed applies a level change: the ingest gate, the sync (more often,
// compressing harder, from warning on), metrics, the log and the notifiers.
func (w *pressureWatch) changed(c pressure.Change, u float64) {
	w.n.gate.SetLevel(c.To)
	for _, s := range w.n.syncs {
		s.SetPressure(c.To >= pressure.Warning)
	}
	w.setGauge(c.To)
	w.moves.WithLabelValues(c.From.String(), c.To.String()).Inc()
	logf := w.n.log.Info
	if c.To > c.From {
		logf = w.n.log.Warn
	}
	logf("buffer pressure level changed", "from", c.From, "to", c.To, "utilisation", fmt.Sprintf("%.1f%%", 100*u))
	w.notify(c)
}

// notify tells the notifiers: a firing alert while the level is above normal
// (critical severity from the critical level on), resolved back at normal.
func (w *pressureWatch) notify(c pressure.Change) {
	sev := alert.Warning
	if c.To >= pressure.Critical {
		sev = alert.Critical
	}
	a := alert.Alert{
		Rule: "buffer-pressure", Severity: sev, State: alert.Firing, Stream: "*",
		Value: c.Utilisation, Threshold: w.mon.Thresholds().Start(c.To), FiredAt: c.At.UnixMilli(),
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.To == pressure.Normal {
		if w.fired == "" {
			return
		}
		a.ID, a.State, a.ResolvedAt = w.fired, alert.Resolved, c.At.UnixMilli()
		w.fired = ""
	} else {
		a.ID = fmt.Sprintf("buffer-pressure/%s/%d", c.To, c.At.UnixMilli())
		w.fired = a.ID
	}
	w.n.raise(a) // also in /v1/alerts
}

// status is the level part of the buffer's status: the level as of the last
// look; pending bytes, capacity and utilisation as of now.
func (w *pressureWatch) status(b *api.BufferStatus) {
	w.mu.Lock()
	l, since := w.mon.Level()
	w.mu.Unlock()
	pending := w.pendingBytes()
	c, free, limited := w.capacity()
	b.Level, b.LevelSince = l.String(), since.UTC().Format(time.RFC3339)
	b.PendingBytes, b.CapacityBytes, b.DiskFreeBytes, b.DiskLimited = pending, c, free, limited
	b.Utilisation = float64(pending) / float64(c)
}
