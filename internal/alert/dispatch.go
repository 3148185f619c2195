package alert

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// CursorPrefix starts the name of each notifier's cursor in the log,
// "=notify:<notifier>" (docs/format/notify.md). The leading buffer.ValuePrefix
// keeps notifiers out of the readers retention reports against.
const CursorPrefix = buffer.ValuePrefix + "notify:"

// MaxNotifierName bounds a webhook's or the backup command's name, which is
// in its cursor's: the cursor name ("=notify:<name>" and a "-n" telling apart
// notifiers of one name) must fit the log's 255 bytes, or it is never saved.
const MaxNotifierName = 200

// StartCursor, if the log has it, is where notifiers start in a data
// directory none of whose notifiers has a cursor yet, when that is before
// DispatcherOptions.From: `holdfast recover --from-cloud` sets it to the end
// of the records the cloud held, so that the alerts its replay writes anew
// after them (which the lost node may never have delivered) are notified,
// although the recovered checkpoint is past them (docs/format/notify.md).
const StartCursor = buffer.ValuePrefix + "notify"

// DispatcherOptions configure a Dispatcher.
type DispatcherOptions struct {
	// Log holds the alert records (type 0x03) the notifiers deliver; required.
	Log buffer.Engine
	// From is where a notifier with no cursor in Log starts: the offset the
	// processor resumes from (docs/format/notify.md, "The first start").
	From uint64

	Primary []Notifier // every alert goes to each of these
	Backup  Notifier   // optional: critical alerts the primaries cannot deliver
	Logger  *slog.Logger
	// UseBackup reports that primary channels are known to be unreachable (e.g.
	// the cloud uplink is offline); then critical alerts go to Backup as soon
	// as they are read, as well as to the primaries. Optional; it must be safe
	// to call from any goroutine and must not block.
	UseBackup func() bool
	// Registerer, if set, gets the dispatcher's metrics:
	// holdfast_alert_notifications_total{notifier,result} (result sent, failed or
	// dropped), holdfast_alert_backup_total{reason} (failover or offline),
	// holdfast_alert_notifier_lag_records{notifier} and
	// holdfast_alert_notifier_skipped_records_total{notifier}.
	Registerer prometheus.Registerer

	// saveEvery is how often a notifier that has passed only records other
	// than alerts saves its cursor; default 1s.
	saveEvery time.Duration
}

// Dispatcher delivers the alerts of the log to notifiers. Each notifier reads
// the log's alert records in offset order on its own goroutine, with its own
// durable cursor, so a slow one delays no other and after any stop or crash
// each resumes at the first alert it had not finished (docs/format/notify.md):
// every alert reaches every primary notifier at least once while the log
// holds it. An alert whose retries run out is logged, counted as failed and
// passed, so it holds back no later one. A critical alert also goes to the
// backup notifier, once per run of the node, if a primary finally fails to
// deliver it (the primary waits for the hand-off before it moves on) or if
// UseBackup reports the primaries unreachable when the backup's reader reads
// it; other severities never do.
//
// The dispatcher owns its notifiers: Close closes those that are io.Closers
// (once per place each was given in the options).
type Dispatcher struct {
	log       *slog.Logger
	buf       buffer.Engine
	useBackup func() bool
	saveEvery time.Duration
	primary   []*worker
	backup    *worker // nil without a backup notifier

	stopping context.Context // cancelled by Close: readers stop at the end of the log
	stop     context.CancelFunc
	ctx      context.Context // cancelled when Close gives up waiting: Notify calls abort
	cancel   context.CancelFunc

	mu      sync.RWMutex // held for reading while sending on an extra queue, for writing to close them
	started bool         // guarded by mu
	closed  bool         // guarded by mu; the extra queues are closed
	wg      sync.WaitGroup

	handedMu sync.Mutex
	handed   map[string]chan struct{} // guarded by handedMu; alert key → closed once the backup is done with it
	order    []string                 // guarded by handedMu; keys of handed, oldest first, for bounding

	backupFailover, backupOffline atomic.Uint64
}

// worker is one notifier with its cursor.
type worker struct {
	n       Notifier
	name    string // unique within the dispatcher
	cursor  string // CursorPrefix + name
	primary bool
	// pos is the next offset the notifier reads: every alert record below it
	// is done. Written by the notifier's reader only.
	pos atomic.Uint64
	// extra holds alerts given by Send, which are not records of the log.
	extra                          chan job
	sent, failed, dropped, skipped atomic.Uint64
	// lastFail is the last failed delivery; nil until one fails.
	lastFail atomic.Pointer[failure]
}

// failure is a failed delivery: when, and the error.
type failure struct {
	at  time.Time
	err string
}

// job is an alert given by Send.
type job struct {
	a    Alert
	done chan struct{} // backup only: closed once delivered or failed
}

// extraQueue bounds the alerts given by Send that wait for one notifier.
const extraQueue = 64

// maxHanded bounds the alerts remembered as handed to the backup notifier.
const maxHanded = 10_000

// NewDispatcher returns a dispatcher whose notifiers start reading at Start.
// A notifier that has no cursor in the log yet gets one at o.From, saved at
// once.
func NewDispatcher(o DispatcherOptions) *Dispatcher {
	if o.Log == nil {
		panic("alert: NewDispatcher without a log")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.saveEvery <= 0 {
		o.saveEvery = time.Second
	}
	d := &Dispatcher{log: o.Logger, buf: o.Log, useBackup: o.UseBackup, saveEvery: o.saveEvery,
		handed: map[string]chan struct{}{}}
	d.stopping, d.stop = context.WithCancel(context.Background())
	d.ctx, d.cancel = context.WithCancel(context.Background())
	names := make(map[string]int)
	initial := map[string]uint64{}
	if off, ok := o.Log.Cursor(StartCursor); ok && off < o.From && !hasNotifierCursor(o.Log.Cursors()) {
		o.From = off
	}
	newWorker := func(n Notifier, primary bool) *worker {
		name := n.Name()
		if names[name]++; names[name] > 1 {
			name += "-" + strconv.Itoa(names[name])
		}
		w := &worker{n: n, name: name, cursor: CursorPrefix + name, primary: primary, extra: make(chan job, extraQueue)}
		off, ok := o.Log.Cursor(w.cursor)
		if !ok {
			off = o.From
			initial[w.cursor] = off
		}
		w.pos.Store(off)
		return w
	}
	for _, n := range o.Primary {
		d.primary = append(d.primary, newWorker(n, true))
	}
	if o.Backup != nil {
		d.backup = newWorker(o.Backup, false)
	}
	if len(initial) > 0 {
		if err := o.Log.CommitCursors(initial); err != nil {
			d.log.Error("notifier cursors not saved; a restart starts them again where this one did", "err", err)
		} else {
			d.log.Info("notifiers start reading alerts", "offset", o.From, "notifiers", len(initial))
		}
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(collector{d})
	}
	return d
}

// hasNotifierCursor reports whether some notifier has a cursor.
func hasNotifierCursor(cursors map[string]uint64) bool {
	for name := range cursors {
		if strings.HasPrefix(name, CursorPrefix) {
			return true
		}
	}
	return false
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
	for _, w := range d.workers() {
		d.wg.Add(2)
		go func() {
			defer d.wg.Done()
			d.follow(w)
		}()
		go func() {
			defer d.wg.Done()
			d.runExtra(w)
		}()
	}
}

// Send delivers an alert that is not a record of the log (the buffer's
// pressure alert, which must go out even when the log cannot take it) to every
// primary notifier, and for a critical alert while UseBackup reports true, to
// the backup notifier. Such alerts are delivered at most once: Send never
// blocks, an alert that does not fit a notifier's small queue, or comes after
// Close, is dropped for that notifier and counted, and one still queued when
// the process ends is not delivered. Send is safe for concurrent use.
func (d *Dispatcher) Send(a Alert) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		for _, w := range d.primary {
			d.drop(w, a, "dispatcher closed")
		}
		return
	}
	for _, w := range d.primary {
		d.enqueue(w, job{a: a})
	}
	if a.Severity == Critical && d.backup != nil && d.useBackup != nil && d.useBackup() {
		if done, first := d.claim(a); first {
			d.backupOffline.Add(1)
			d.logHandOff(a, "offline")
			if !d.enqueue(d.backup, job{a: a, done: done}) {
				close(done)
			}
		}
	}
}

// enqueue adds j to w's extra queue without blocking; mu is held for reading.
func (d *Dispatcher) enqueue(w *worker, j job) bool {
	select {
	case w.extra <- j:
		return true
	default:
		d.drop(w, j.a, "queue full")
		return false
	}
}

func (d *Dispatcher) drop(w *worker, a Alert, why string) {
	n := w.dropped.Add(1)
	d.log.Warn("alert notification dropped", "notifier", w.name, "reason", why,
		"alert", a.ID, "state", a.State, "dropped_total", n)
}

// runExtra delivers the alerts Send queued for w until the queue is closed.
// Once d.ctx is cancelled, what is left is dropped.
func (d *Dispatcher) runExtra(w *worker) {
	for j := range w.extra {
		if d.ctx.Err() != nil {
			d.drop(w, j.a, "dispatcher stopped")
		} else if d.notify(w, j.a) {
			d.drop(w, j.a, "dispatcher stopped")
		}
		if j.done != nil {
			close(j.done)
		}
	}
}

// notify delivers a to w, and on a primary's final failure of a critical
// alert, to the backup notifier. It returns true if the dispatcher stopped
// before it was done, or w's channel is closed (ErrClosed): then a is to be
// delivered again after a restart.
func (d *Dispatcher) notify(w *worker, a Alert) (stopped bool) {
	err := w.n.Notify(d.ctx, a)
	switch {
	case err == nil:
		w.sent.Add(1)
	case d.ctx.Err() != nil:
		return true
	case errors.Is(err, ErrClosed):
		// The channel closed with the node: a stays after the cursor.
		d.log.Warn("alert notifier stopped: its channel is closed; the alert is delivered after the next start",
			"notifier", w.name, "alert", a.ID, "state", a.State, "err", err)
		return true
	default:
		w.failed.Add(1)
		w.lastFail.Store(&failure{at: time.Now(), err: err.Error()})
		d.log.Error("alert notification failed", "notifier", w.name, "alert", a.ID, "state", a.State,
			"severity", a.Severity, "err", err)
		if w.primary && a.Severity == Critical && d.backup != nil {
			d.handToBackup(a, "failover")
			return d.ctx.Err() != nil
		}
	}
	return false
}

// claim marks a as handed to the backup notifier. first is true for the first
// claim, whose caller must close done once the backup is done with a; a later
// caller may wait on done.
func (d *Dispatcher) claim(a Alert) (done chan struct{}, first bool) {
	key := a.ID + "/" + string(a.State)
	d.handedMu.Lock()
	defer d.handedMu.Unlock()
	if done, ok := d.handed[key]; ok {
		return done, false
	}
	done = make(chan struct{})
	d.handed[key] = done
	d.order = append(d.order, key)
	if len(d.order) > maxHanded {
		delete(d.handed, d.order[0])
		d.order = d.order[1:]
	}
	return done, true
}

// handToBackup delivers a to the backup notifier unless that has been done in
// this run, and returns once the backup is done with it (delivered, failed,
// or the dispatcher stopped).
func (d *Dispatcher) handToBackup(a Alert, reason string) {
	done, first := d.claim(a)
	if !first {
		select {
		case <-done:
		case <-d.ctx.Done():
		}
		return
	}
	defer close(done)
	if reason == "offline" {
		d.backupOffline.Add(1)
	} else {
		d.backupFailover.Add(1)
	}
	d.logHandOff(a, reason)
	d.notify(d.backup, a)
}

func (d *Dispatcher) logHandOff(a Alert, reason string) {
	d.log.Warn("critical alert sent to backup channel", "notifier", d.backup.name, "reason", reason, "alert", a.ID,
		"state", a.State)
}

// Close stops the notifiers: each delivers what the log holds up to its end
// and stops there, saving its cursor. If ctx ends first, the Notify calls in
// flight are cancelled and their alerts stay after the cursors, for the next
// start: that is logged, not an error, since nothing is lost (alerts given by
// Send and still queued are dropped and counted). Then Close closes the
// notifiers that are io.Closers. Close before Start starts delivery first. The
// log must stay open until Close returns.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.startLocked()
	for _, w := range d.workers() {
		close(w.extra)
	}
	d.mu.Unlock()
	d.stop()

	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		d.cancel()
		<-done
		for _, w := range d.workers() {
			if lag := d.buf.DurableOffset() - min(w.pos.Load(), d.buf.DurableOffset()); lag > 0 {
				d.log.Warn("alert notifier stopped before it was done; it resumes at the next start",
					"notifier", w.name, "offset", w.pos.Load(), "lag_records", lag)
			}
		}
	}
	d.cancel()

	for _, w := range d.workers() {
		if c, ok := w.n.(io.Closer); ok {
			if cerr := c.Close(); cerr != nil {
				d.log.Warn("close notifier", "notifier", w.name, "err", cerr)
			}
		}
	}
	return nil
}

// workers returns the primaries in configured order, then the backup if any.
func (d *Dispatcher) workers() []*worker {
	ws := append([]*worker(nil), d.primary...)
	if d.backup != nil {
		ws = append(ws, d.backup)
	}
	return ws
}

// NotifierStats counts one notifier's deliveries; /v1/status shows them.
type NotifierStats struct {
	Name    string `json:"name"`
	Backup  bool   `json:"backup,omitempty"` // the backup notifier
	Sent    uint64 `json:"sent"`             // delivered
	Failed  uint64 `json:"failed"`           // retries exhausted or failed for good
	Dropped uint64 `json:"dropped"`          // alerts given by Send (not log records) never attempted
	// Skipped counts log records deleted (retention, buffer pressure) before
	// the notifier read them.
	Skipped uint64 `json:"skipped_records"`
	// Position is the next offset the notifier reads: every alert below it is
	// done. Lag is the number of durable log records from Position on.
	Position uint64 `json:"position"`
	Lag      uint64 `json:"lag_records"`
	// LastError is the last failed delivery's error and LastFailure when it
	// failed; kept after later successes, which LastFailure dates against.
	LastError   string    `json:"last_error,omitempty"`
	LastFailure time.Time `json:"last_failure,omitzero"`
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
	durable := d.buf.DurableOffset()
	for _, w := range d.workers() {
		pos := w.pos.Load()
		s.Notifiers = append(s.Notifiers, NotifierStats{Name: w.name, Backup: w == d.backup, Sent: w.sent.Load(),
			Failed: w.failed.Load(), Dropped: w.dropped.Load(), Skipped: w.skipped.Load(),
			Position: pos, Lag: durable - min(pos, durable)})
		if f := w.lastFail.Load(); f != nil {
			ns := &s.Notifiers[len(s.Notifiers)-1]
			ns.LastError, ns.LastFailure = f.err, f.at
		}
	}
	return s
}

var (
	notificationsDesc = prometheus.NewDesc("holdfast_alert_notifications_total",
		"Alert notifications by notifier and result: sent, failed (retries exhausted or rejected), dropped (an alert that is not a log record, never attempted).",
		[]string{"notifier", "result"}, nil)
	backupDesc = prometheus.NewDesc("holdfast_alert_backup_total",
		"Critical alerts handed to the backup channel, by reason: failover (a primary failed) or offline (primaries unreachable).",
		[]string{"reason"}, nil)
	lagDesc = prometheus.NewDesc("holdfast_alert_notifier_lag_records",
		"Log records from a notifier's cursor to the log's end: how far its delivery is behind.", []string{"notifier"}, nil)
	skippedDesc = prometheus.NewDesc("holdfast_alert_notifier_skipped_records_total",
		"Log records deleted (retention, buffer pressure) before a notifier read them.", []string{"notifier"}, nil)
)

// collector exposes a dispatcher's Stats as Prometheus metrics.
type collector struct{ d *Dispatcher }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- notificationsDesc
	ch <- backupDesc
	ch <- lagDesc
	ch <- skippedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.d.Stats()
	for _, n := range s.Notifiers {
		ch <- prometheus.MustNewConstMetric(notificationsDesc, prometheus.CounterValue, float64(n.Sent), n.Name, "sent")
		ch <- prometheus.MustNewConstMetric(notificationsDesc, prometheus.CounterValue, float64(n.Failed), n.Name, "failed")
		ch <- prometheus.MustNewConstMetric(notificationsDesc, prometheus.CounterValue, float64(n.Dropped), n.Name, "dropped")
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(n.Lag), n.Name)
		ch <- prometheus.MustNewConstMetric(skippedDesc, prometheus.CounterValue, float64(n.Skipped), n.Name)
	}
	ch <- prometheus.MustNewConstMetric(backupDesc, prometheus.CounterValue, float64(s.BackupFailover), "failover")
	ch <- prometheus.MustNewConstMetric(backupDesc, prometheus.CounterValue, float64(s.BackupOffline), "offline")
}
