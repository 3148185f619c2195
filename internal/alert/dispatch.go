package alert

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// DispatcherOptions configure a Dispatcher.
type DispatcherOptions struct {
	Primary []Notifier // every alert goes to each of these
	Backup  Notifier   // optional: critical alerts the primaries cannot deliver
	// QueueSize is each notifier's queue length, default 1024.
	QueueSize int
	Logger    *slog.Logger // default slog.Default()
	// UseBackup reports that primary channels are known to be unreachable (e.g.
	// the cloud uplink is offline); then critical alerts go to Backup immediately
	// as well as to the primaries. Optional; it must be safe to call from any
	// goroutine and must not block.
	UseBackup func() bool
	// Registerer, if set, gets the dispatcher's metrics:
	// holdfast_alert_notifications_total{notifier,result} (result sent, failed or
	// dropped), holdfast_alert_backup_total{reason} (failover or offline) and
	// holdfast_alert_queue_length{notifier}.
	Registerer prometheus.Registerer
}

// Dispatcher delivers alerts to notifiers: one queue and goroutine per notifier,
// so each gets alerts in the order sent and a slow one delays no other. Every
// alert goes to every primary notifier. A critical alert also goes to the backup
// notifier, once, if a primary finally fails to deliver it or if UseBackup
// reports the primaries unreachable when it is sent; other severities never do.
//
// The dispatcher owns its notifiers: Close closes those that are io.Closers
// (once per place each was given in the options).
type Dispatcher struct {
	log       *slog.Logger
	useBackup func() bool
	primary   []*worker
	backup    *worker // nil without a backup notifier

	ctx    context.Context // cancelled when Close gives up waiting: Notify calls abort
	cancel context.CancelFunc

	mu      sync.RWMutex // held for reading while sending on a queue, for writing to close them
	started bool         // guarded by mu
	closed  bool         // guarded by mu; queues of primaries are closed

	primaryWG, backupWG sync.WaitGroup

	backupFailover, backupOffline atomic.Uint64
}

// worker is one notifier with its queue.
type worker struct {
	n                     Notifier
	name                  string // unique within the dispatcher
	q                     chan job
	sent, failed, dropped atomic.Uint64
}

type job struct {
	a Alert
	// toBackup is set once the alert has been handed to the backup notifier; nil
	// unless the alert is critical and there is a backup notifier.
	toBackup *atomic.Bool
}

// NewDispatcher returns a dispatcher that queues alerts until Start.
func NewDispatcher(o DispatcherOptions) *Dispatcher {
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	d := &Dispatcher{log: o.Logger, useBackup: o.UseBackup}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	names := make(map[string]int)
	newWorker := func(n Notifier) *worker {
		name := n.Name()
		if names[name]++; names[name] > 1 {
			name += "-" + strconv.Itoa(names[name])
		}
		return &worker{n: n, name: name, q: make(chan job, o.QueueSize)}
	}
	for _, n := range o.Primary {
		d.primary = append(d.primary, newWorker(n))
	}
	if o.Backup != nil {
		d.backup = newWorker(o.Backup)
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(collector{d})
	}
	return d
}

// Start starts delivery. Calling it again does nothing.
func (d *Dispatcher) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.startLocked()
}

func (d *Dispatcher) startLocked() {
	if d.started {
		return
	}
	d.started = true
	for _, w := range d.primary {
		d.primaryWG.Add(1)
		go func() {
			defer d.primaryWG.Done()
			d.run(w, true)
		}()
	}
	if d.backup != nil {
		d.backupWG.Add(1)
		go func() {
			defer d.backupWG.Done()
			d.run(d.backup, false)
		}()
	}
}

// Send queues a for every primary notifier, and for a critical alert while
// UseBackup reports true, for the backup notifier. It never blocks: where a
// queue is full, or the dispatcher is closed, a is dropped for that notifier
// and counted. Send is safe for concurrent use.
func (d *Dispatcher) Send(a Alert) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		for _, w := range d.primary {
			d.drop(w, a, "dispatcher closed")
		}
		return
	}
	j := job{a: a}
	if a.Severity == Critical && d.backup != nil {
		j.toBackup = new(atomic.Bool)
	}
	for _, w := range d.primary {
		d.enqueue(w, j)
	}
	if j.toBackup != nil && d.useBackup != nil && d.useBackup() {
		d.handToBackup(j, "offline")
	}
}

// enqueue adds j to w's queue without blocking. The caller makes sure the queue
// is open: Send holds mu for reading, and the backup queue closes only after
// every primary worker has stopped.
func (d *Dispatcher) enqueue(w *worker, j job) {
	select {
	case w.q <- j:
	default:
		d.drop(w, j.a, "queue full")
	}
}

func (d *Dispatcher) drop(w *worker, a Alert, why string) {
	n := w.dropped.Add(1)
	d.log.Warn("alert notification dropped", "notifier", w.name, "reason", why,
		"alert", a.ID, "state", a.State, "dropped_total", n)
}

// handToBackup queues j for the backup notifier unless it has been already.
func (d *Dispatcher) handToBackup(j job, reason string) {
	if !j.toBackup.CompareAndSwap(false, true) {
		return
	}
	if reason == "offline" {
		d.backupOffline.Add(1)
	} else {
		d.backupFailover.Add(1)
	}
	d.log.Warn("critical alert sent to backup channel", "notifier", d.backup.name, "reason", reason, "alert", j.a.ID,
		"state", j.a.State)
	d.enqueue(d.backup, j)
}

// run delivers w's queue until it is closed. Once d.ctx is cancelled, what is
// left is dropped.
func (d *Dispatcher) run(w *worker, primary bool) {
	for j := range w.q {
		if d.ctx.Err() != nil {
			d.drop(w, j.a, "dispatcher stopped")
			continue
		}
		err := w.n.Notify(d.ctx, j.a)
		switch {
		case err == nil:
			w.sent.Add(1)
		case d.ctx.Err() != nil:
			d.drop(w, j.a, "dispatcher stopped")
		default:
			w.failed.Add(1)
			d.log.Error("alert notification failed", "notifier", w.name, "alert", j.a.ID, "state", j.a.State,
				"severity", j.a.Severity, "err", err)
			if primary && j.toBackup != nil {
				d.handToBackup(j, "failover")
			}
		}
	}
}

// Close stops taking alerts, delivers what is queued, stops the goroutines and
// closes the notifiers that are io.Closers. If ctx ends first, the Notify calls
// in flight are cancelled, what is still queued is dropped and counted, and
// Close returns ctx's error once the goroutines have stopped. Close before Start
// starts delivery so the queues drain.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.startLocked()
	for _, w := range d.primary {
		close(w.q)
	}
	d.mu.Unlock()

	done := make(chan struct{})
	go func() {
		d.primaryWG.Wait() // primaries may fail over to the backup until they stop
		if d.backup != nil {
			close(d.backup.q)
		}
		d.backupWG.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("alert dispatcher: close: %w", ctx.Err())
		d.cancel()
		<-done
	}
	d.cancel()

	for _, w := range d.workers() {
		if c, ok := w.n.(io.Closer); ok {
			if cerr := c.Close(); cerr != nil {
				d.log.Warn("close notifier", "notifier", w.name, "err", cerr)
			}
		}
	}
	return err
}

// workers returns the primaries in configured order, then the backup if any.
func (d *Dispatcher) workers() []*worker {
	ws := append([]*worker(nil), d.primary...)
	if d.backup != nil {
		ws = append(ws, d.backup)
	}
	return ws
}

// NotifierStats counts one notifier's deliveries.
type NotifierStats struct {
	Name    string
	Backup  bool   // the backup notifier
	Sent    uint64 // delivered
	Failed  uint64 // retries exhausted or failed for good
	Dropped uint64 // not attempted: queue full, or dispatcher closed or stopped
	Queued  int    // waiting now
}

// Stats are a dispatcher's counters since it was created.
type Stats struct {
	Notifiers []NotifierStats // primaries in configured order, then the backup
	// BackupFailover counts critical alerts handed to the backup notifier because
	// a primary failed; BackupOffline those handed over because UseBackup was true.
	BackupFailover, BackupOffline uint64
}

// Stats returns the counters. It is safe for concurrent use.
func (d *Dispatcher) Stats() Stats {
	s := Stats{BackupFailover: d.backupFailover.Load(), BackupOffline: d.backupOffline.Load()}
	for _, w := range d.workers() {
		s.Notifiers = append(s.Notifiers, NotifierStats{Name: w.name, Backup: w == d.backup, Sent: w.sent.Load(),
			Failed: w.failed.Load(), Dropped: w.dropped.Load(), Queued: len(w.q)})
	}
	return s
}

var (
	notificationsDesc = prometheus.NewDesc("holdfast_alert_notifications_total",
		"Alert notifications by notifier and result: sent, failed (retries exhausted or rejected), dropped (never attempted).",
		[]string{"notifier", "result"}, nil)
	backupDesc = prometheus.NewDesc("holdfast_alert_backup_total",
		"Critical alerts handed to the backup channel, by reason: failover (a primary failed) or offline (primaries unreachable).",
		[]string{"reason"}, nil)
	queueDesc = prometheus.NewDesc("holdfast_alert_queue_length",
		"Alerts waiting in a notifier's queue.", []string{"notifier"}, nil)
)

// collector exposes a dispatcher's Stats as Prometheus metrics.
type collector struct{ d *Dispatcher }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- notificationsDesc
	ch <- backupDesc
	ch <- queueDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.d.Stats()
	for _, n := range s.Notifiers {
		ch <- prometheus.MustNewConstMetric(notificationsDesc, prometheus.CounterValue, float64(n.Sent), n.Name, "sent")
		ch <- prometheus.MustNewConstMetric(notificationsDesc, prometheus.CounterValue, float64(n.Failed), n.Name, "failed")
		ch <- prometheus.MustNewConstMetric(notificationsDesc, prometheus.CounterValue, float64(n.Dropped), n.Name, "dropped")
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(n.Queued), n.Name)
	}
	ch <- prometheus.MustNewConstMetric(backupDesc, prometheus.CounterValue, float64(s.BackupFailover), "failover")
	ch <- prometheus.MustNewConstMetric(backupDesc, prometheus.CounterValue, float64(s.BackupOffline), "offline")
}
