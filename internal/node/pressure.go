package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// pressureWatch follows the buffer's utilisation as the seed's pressure
// levels (internal/pressure): in status and metrics, in the log, as an alert
// to the notifiers at every change, at ingest through the node's gate
// (sampling from critical, refusing low-priority streams from emergency), and
// on the buffer: from critical on, records every sink has confirmed are
// evicted (engines that implement buffer.Evictor: the native log), so that the
// level can come down. Downsampling is not built yet.
type pressureWatch struct {
	n       *Node
	stop    chan struct{}
	done    chan struct{}
	level   *prometheus.GaugeVec
	moves   *prometheus.CounterVec
	evicted prometheus.Counter

	mu    sync.Mutex
	mon   *pressure.Monitor
	util  float64
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

// check reads the utilisation and reports a level change.
func (w *pressureWatch) check() {
	max := int64(w.n.cfg.Buffer.MaxBytes)
	if max <= 0 {
		return
	}
	u := float64(w.n.buf.Stats().Bytes) / float64(max)
	w.mu.Lock()
	w.util = u
	c, changed := w.mon.Observe(u, time.Now())
	level, _ := w.mon.Level()
	w.mu.Unlock()
	if level >= pressure.Critical {
		w.evictSynced()
	}
	if !changed {
		return
	}
	w.n.gate.SetLevel(c.To)
	w.setGauge(c.To)
	w.moves.WithLabelValues(c.From.String(), c.To.String()).Inc()
	logf := w.n.log.Info
	if c.To > c.From {
		logf = w.n.log.Warn
	}
	logf("buffer pressure level changed", "from", c.From, "to", c.To, "utilisation", fmt.Sprintf("%.1f%%", 100*u))
	w.notify(c)
}

// evictSynced deletes what every sink has confirmed (and processing no longer
// needs for a restart), so that the level can come down. Synced records lose
// nothing the cloud lacks; a segmented log deletes them whole segments at a
// time, oldest first, whatever their priority.
func (w *pressureWatch) evictSynced() {
	ev, ok := w.n.buf.(buffer.Evictor)
	if !ok || len(w.n.syncs) == 0 {
		return // an engine that only deletes by retention, or nothing syncs
	}
	off, ok := buffer.SlowestPosition(w.n.buf.Cursors())
	if !ok {
		return
	}
	if w.n.proc != nil {
		c, ok := w.n.proc.CheckpointOffset()
		if !ok {
			return // a restart would replay from the start
		}
		off = min(off, c)
	}
	n, err := ev.DeleteBefore(off)
	if err != nil {
		w.n.log.Warn("evicting synced records failed", "err", err)
		return
	}
	if n > 0 {
		w.evicted.Add(float64(n))
		w.n.log.Info("buffer pressure: evicted synced records", "records", n, "below", off)
	}
}

// notify tells the notifiers: a firing alert while the level is above normal
// (critical severity from the critical level on), resolved back at normal.
func (w *pressureWatch) notify(c pressure.Change) {
	d := w.n.disp
	if d == nil {
		return
	}
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
	d.Send(a)
}

// status is the level part of the buffer's status.
func (w *pressureWatch) status() (pressure.Level, time.Time, float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l, since := w.mon.Level()
	return l, since, w.util
}
