package alert

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// recorder is a notifier that records what it is given.
type recorder struct {
	name string
	mu   sync.Mutex
	got  []Alert // guarded by mu
}

func (r *recorder) Name() string { return r.name }

func (r *recorder) Notify(_ context.Context, a Alert) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, a)
	return nil
}

func (r *recorder) Got() []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Alert(nil), r.got...)
}

// hanging is a notifier whose Notify blocks until its context is done.
type hanging struct {
	entered chan struct{} // receives once per Notify call that starts waiting
	closed  atomic.Bool
}

func (h *hanging) Name() string { return "hanging" }

func (h *hanging) Notify(ctx context.Context, _ Alert) error {
	h.entered <- struct{}{}
	<-ctx.Done()
	return ctx.Err()
}

func (h *hanging) Close() error { h.closed.Store(true); return nil }

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// alerts returns n alerts of rule with the given severity, ids distinct.
func alerts(rule string, sev Severity, n int) []Alert {
	out := make([]Alert, n)
	for i := range out {
		a := sample(rule, sev)
		a.FiredAt += int64(i)
		a.ID = alertID(a.Rule, a.DeviceID, a.FiredAt)
		out[i] = a
	}
	return out
}

func statsOf(t *testing.T, d *Dispatcher, name string) NotifierStats {
	t.Helper()
	for _, n := range d.Stats().Notifiers {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no notifier %q in %+v", name, d.Stats())
	return NotifierStats{}
}

func closeDispatcher(t *testing.T, d *Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// openLog opens a log in memory on fs, closed when the test ends (after the
// dispatchers the test closes).
func openLog(t *testing.T, fs vfs.FS, o buffer.Options) *buffer.Log {
	t.Helper()
	o.Dir, o.FS = "/log", fs
	l, err := buffer.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// appendAlerts writes the alerts to l as alert records, in order, each after
// a record that is not an alert (a hole).
func appendAlerts(t *testing.T, l buffer.Engine, as ...Alert) {
	t.Helper()
	var payloads [][]byte
	for _, a := range as {
		rec := event.AlertRecord{Rule: a.Rule, Severity: string(a.Severity), Firing: a.State == Firing,
			Stream: a.Stream, DeviceID: a.DeviceID, Value: a.Value, Threshold: a.Threshold,
			FiredAt: a.FiredAt, ResolvedAt: a.ResolvedAt}
		if rec.ID() != a.ID {
			t.Fatalf("alert id %q does not match its record's %q", a.ID, rec.ID())
		}
		payloads = append(payloads, []byte{event.TypeHole}, rec.AppendBinary(nil))
	}
	if _, err := l.Append(payloads...); err != nil {
		t.Fatal(err)
	}
}

// gate is a notifier that records what it is given, but holds each Notify
// until open is closed (or its context ends).
type gate struct {
	recorder
	open    chan struct{}
	entered chan struct{} // closed at the first Notify
	once    sync.Once
}

func newGate(name string) *gate {
	return &gate{recorder: recorder{name: name}, open: make(chan struct{}), entered: make(chan struct{})}
}

func (g *gate) Notify(ctx context.Context, a Alert) error {
	g.once.Do(func() { close(g.entered) })
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.recorder.Notify(ctx, a)
}

// TestDispatcherBackupOnFailure: with the webhook down, a critical alert reaches
// the backup script after the webhook's retries; a warning does not. Both
// failed alerts are passed: the cursors end past them.
func TestDispatcherBackupOnFailure(t *testing.T) {
	for _, down := range []string{"closed", "500"} {
		t.Run(down, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusInternalServerError)
			}))
			defer srv.Close()
			if down == "closed" {
				srv.Close()
			}
			out := backupOutput(t)
			l := openLog(t, vfs.NewMem(), buffer.Options{})
			log := &recorder{name: "log"}
			d := NewDispatcher(DispatcherOptions{
				Log:     l,
				Primary: []Notifier{log, NewWebhook(WebhookOptions{URL: srv.URL, Retry: fastRetry(2)})},
				Backup:  NewCommand(CommandOptions{Path: writeScript(t, "backup.sh", backupScript)}),
				Logger:  quietLogger(),
			})
			d.Start()
			warn, crit := sample("warm", Warning), sample("hot", Critical)
			appendAlerts(t, l, warn, crit)
			eventually(t, "the critical alert in the backup output", func() bool { return len(readRecords(t, out)) > 0 })
			eventually(t, "the webhook past both alerts", func() bool { return statsOf(t, d, "webhook").Position == 4 })
			// The webhook fails the warning before the critical alert, so by now the
			// warning has had every chance to reach the backup.
			recs := readRecords(t, out)
			if len(recs) != 1 || recs[0].alert != crit || !strings.HasPrefix(recs[0].env, "severity=critical state=firing id=hot/d1/") {
				t.Fatalf("backup got %+v, want only %+v", recs, crit)
			}
			closeDispatcher(t, d)
			if got := log.Got(); !reflect.DeepEqual(got, []Alert{warn, crit}) {
				t.Fatalf("log notifier got %+v", got)
			}
			s := d.Stats()
			// The webhook's failures are in its stats: the error and when.
			wh := &s.Notifiers[1]
			if !strings.Contains(wh.LastError, "webhook") || time.Since(wh.LastFailure) > time.Minute {
				t.Fatalf("webhook's last failure: %q at %v", wh.LastError, wh.LastFailure)
			}
			wh.LastError, wh.LastFailure = "", time.Time{}
			want := Stats{Notifiers: []NotifierStats{
				{Name: "log", Sent: 2, Position: 4},
				{Name: "webhook", Failed: 2, Position: 4},
				{Name: "command", Backup: true, Sent: 1, Position: 4},
			}, BackupFailover: 1}
			if !reflect.DeepEqual(s, want) {
				t.Fatalf("stats %+v\nwant %+v", s, want)
			}
			for _, name := range []string{"log", "webhook", "command"} {
				if off, _ := l.Cursor(CursorPrefix + name); off != 4 {
					t.Fatalf("cursor of %s at %d, want 4", name, off)
				}
			}
		})
	}
}

// TestDispatcherUseBackup: while the primaries are known unreachable, a critical
// alert goes to the backup at once, and only once even when the primary then
// fails too; a warning still never does.
func TestDispatcherUseBackup(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	out := backupOutput(t)
	var offline atomic.Bool
	offline.Store(true)
	l := openLog(t, vfs.NewMem(), buffer.Options{})
	d := NewDispatcher(DispatcherOptions{
		Log:       l,
		Primary:   []Notifier{NewWebhook(WebhookOptions{URL: srv.URL, Retry: fastRetry(1)})},
		Backup:    NewCommand(CommandOptions{Path: writeScript(t, "backup.sh", backupScript)}),
		Logger:    quietLogger(),
		UseBackup: offline.Load,
	})
	d.Start()
	crit, warn := sample("hot", Critical), sample("warm", Warning)
	appendAlerts(t, l, crit, warn)
	// The webhook is still holding its first request.
	eventually(t, "the critical alert in the backup output", func() bool { return len(readRecords(t, out)) > 0 })
	if s := statsOf(t, d, "webhook"); s.Sent+s.Failed != 0 {
		t.Fatalf("webhook finished before the backup: %+v", s)
	}
	close(release)
	eventually(t, "the webhook to fail both", func() bool { return statsOf(t, d, "webhook").Failed == 2 })
	closeDispatcher(t, d)
	if recs := readRecords(t, out); len(recs) != 1 || recs[0].alert != crit {
		t.Fatalf("backup got %+v, want %+v once", recs, crit)
	}
	if s := d.Stats(); s.BackupOffline != 1 || s.BackupFailover != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDispatcherFullQueueDropsNothing: with one notifier hung, the alerts pile
// up far beyond what any in-memory queue held (1024 per notifier before
// notifiers read the log): none is dropped. The hung notifier gets every one,
// in order, once it recovers, and a second notifier is not held up meanwhile.
func TestDispatcherFullQueueDropsNothing(t *testing.T) {
	l := openLog(t, vfs.NewMem(), buffer.Options{})
	slow, rec := newGate("slow"), &recorder{name: "rec"}
	reg := prometheus.NewPedanticRegistry()
	d := NewDispatcher(DispatcherOptions{Log: l, Primary: []Notifier{slow, rec}, Logger: quietLogger(), Registerer: reg})
	d.Start()
	defer closeDispatcher(t, d)
	all := alerts("hot", Warning, 3000)
	appendAlerts(t, l, all[0])
	<-slow.entered
	appendAlerts(t, l, all[1:]...)
	eventually(t, "the second notifier to get every alert", func() bool { return len(rec.Got()) == len(all) })
	// The hung notifier holds the first alert (offset 1): 5999 records from it on.
	if s := statsOf(t, d, "slow"); s.Sent != 0 || s.Lag != 5999 {
		t.Fatalf("hung notifier %+v, want lag 5999", s)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP holdfast_alert_notifier_lag_records Log records from a notifier's cursor to the log's end: how far its delivery is behind.
# TYPE holdfast_alert_notifier_lag_records gauge
holdfast_alert_notifier_lag_records{notifier="rec"} 0
holdfast_alert_notifier_lag_records{notifier="slow"} 5999
`), "holdfast_alert_notifier_lag_records"); err != nil {
		t.Fatal(err)
	}
	close(slow.open)
	eventually(t, "the hung notifier to catch up", func() bool { return len(slow.Got()) == len(all) })
	if !reflect.DeepEqual(slow.Got(), all) || !reflect.DeepEqual(rec.Got(), all) {
		t.Fatal("the notifiers did not get the alerts in order")
	}
	if s := statsOf(t, d, "slow"); s.Sent != 3000 || s.Dropped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestDispatcherResumesAfterStop: a notifier stopped in the middle of its
// alerts (Close gives up on it) gets, after a restart, every alert it had not
// delivered, and none it had; a notifier without a cursor starts at From,
// saved at once.
func TestDispatcherResumesAfterStop(t *testing.T) {
	fs := vfs.NewMem()
	l := openLog(t, fs, buffer.Options{})
	all := alerts("hot", Critical, 5)
	appendAlerts(t, l, all[:2]...) // offsets 0–3: before From
	from := l.NextOffset()
	appendAlerts(t, l, all[2:]...) // offsets 4–9

	g := newGate("hook")
	close(g.open)
	var n atomic.Int32
	stuck := &funcNotifier{name: "hook", notify: func(ctx context.Context, a Alert) error {
		if n.Add(1) > 1 { // delivers one, then hangs
			<-ctx.Done()
			return ctx.Err()
		}
		return g.Notify(ctx, a)
	}}
	d := NewDispatcher(DispatcherOptions{Log: l, From: from, Primary: []Notifier{stuck}, Logger: quietLogger()})
	if off, ok := l.Cursor(CursorPrefix + "hook"); !ok || off != from {
		t.Fatalf("new cursor at %d (%v), want %d", off, ok, from)
	}
	d.Start()
	eventually(t, "the first delivery", func() bool { return len(g.Got()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if off, _ := l.Cursor(CursorPrefix + "hook"); off != from+3 {
		t.Fatalf("cursor at %d after one delivery, want %d (the second alert's offset)", off, from+3)
	}

	// Crash and restart: only what was synced survives.
	fs.Crash(nil)
	l2 := openLog(t, fs, buffer.Options{})
	again := newGate("hook")
	close(again.open)
	d = NewDispatcher(DispatcherOptions{Log: l2, From: 0, Primary: []Notifier{again}, Logger: quietLogger()})
	d.Start()
	eventually(t, "the rest", func() bool { return len(again.Got()) == 2 })
	closeDispatcher(t, d)
	if !reflect.DeepEqual(g.Got(), all[2:3]) || !reflect.DeepEqual(again.Got(), all[3:]) {
		t.Fatalf("first run %v, second run %v", g.Got(), again.Got())
	}
	if off, _ := l2.Cursor(CursorPrefix + "hook"); off != l2.NextOffset() {
		t.Fatalf("cursor at %d, want the log's end %d", off, l2.NextOffset())
	}
}

// TestDispatcherSkipsDeletedRecords: records retention deleted before a
// notifier read them are passed over and counted; the alerts still there are
// delivered.
func TestDispatcherSkipsDeletedRecords(t *testing.T) {
	l := openLog(t, vfs.NewMem(), buffer.Options{SegmentBytes: 4096, MaxBytes: 16384})
	if err := l.CommitCursor(CursorPrefix+"rec", 0); err != nil {
		t.Fatal(err)
	}
	all := alerts("hot", Warning, 2000)
	for _, a := range all {
		appendAlerts(t, l, a)
	}
	first := l.FirstOffset()
	if first == 0 {
		t.Fatal("retention deleted nothing")
	}
	rec := &recorder{name: "rec"}
	d := NewDispatcher(DispatcherOptions{Log: l, Primary: []Notifier{rec}, Logger: quietLogger()})
	d.Start()
	end := l.NextOffset()
	eventually(t, "the notifier at the log's end", func() bool { return statsOf(t, d, "rec").Position == end })
	closeDispatcher(t, d)
	kept := int(end-first) / 2
	if got := rec.Got(); !reflect.DeepEqual(got, all[len(all)-kept:]) {
		t.Fatalf("got %d alerts, want the last %d", len(got), kept)
	}
	if s := statsOf(t, d, "rec"); s.Skipped != first {
		t.Fatalf("skipped %d, want %d", s.Skipped, first)
	}
}

// funcNotifier is a notifier made of a function.
type funcNotifier struct {
	name   string
	notify func(context.Context, Alert) error
}

func (f *funcNotifier) Name() string                              { return f.name }
func (f *funcNotifier) Notify(ctx context.Context, a Alert) error { return f.notify(ctx, a) }

// TestDispatcherSendNeverBlocks: alerts that are not log records (Send) go
// out from memory: with a notifier hung, Send returns at once; what does not
// fit its queue is dropped and counted, and a second notifier is not held up.
func TestDispatcherSendNeverBlocks(t *testing.T) {
	h := &hanging{entered: make(chan struct{}, 1)}
	rec := &recorder{name: "rec"}
	reg := prometheus.NewPedanticRegistry()
	d := NewDispatcher(DispatcherOptions{Log: openLog(t, vfs.NewMem(), buffer.Options{}),
		Primary: []Notifier{h, rec}, Logger: quietLogger(), Registerer: reg})
	d.Start()
	all := alerts("hot", Warning, 2*extraQueue)
	d.Send(all[0])
	select {
	case <-h.entered:
	case <-time.After(waitFor):
		t.Fatal("hanging notifier never called")
	}
	// The recorder has taken the first alert off its queue, so the next
	// extraQueue fit there whatever the scheduler does (under load it may
	// not have, and one was dropped for it too).
	eventually(t, "the recorder to get the first alert", func() bool { return len(rec.Got()) == 1 })
	send := func(as []Alert) {
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for _, a := range as {
				d.Send(a)
			}
		}()
		select {
		case <-sent:
		case <-time.After(waitFor):
			t.Fatal("Send blocked")
		}
	}
	send(all[1 : extraQueue+1])
	eventually(t, "the recorder to get the queued alerts", func() bool { return len(rec.Got()) == extraQueue+1 })
	send(all[extraQueue+1:])
	eventually(t, "the recorder to get all alerts", func() bool { return len(rec.Got()) == len(all) })
	if !reflect.DeepEqual(rec.Got(), all) {
		t.Fatal("the recorder did not get the alerts in order")
	}
	// One in flight, extraQueue queued, the rest dropped.
	if s := statsOf(t, d, "hanging"); s.Dropped != uint64(len(all)-1-extraQueue) || s.Sent != 0 {
		t.Fatalf("hanging notifier stats %+v", s)
	}

	// Close gives up at its deadline: the call in flight is cancelled and the
	// queue is dropped and counted.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if s := statsOf(t, d, "hanging"); s.Dropped != uint64(len(all)) || s.Sent+s.Failed != 0 {
		t.Fatalf("after Close: %+v", s)
	}
	if !h.closed.Load() {
		t.Fatal("Close did not close the notifier")
	}
	d.Send(all[0]) // after Close: dropped, no panic
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP holdfast_alert_notifications_total Alert notifications by notifier and result: sent, failed (retries exhausted or rejected), dropped (an alert that is not a log record, never attempted).
# TYPE holdfast_alert_notifications_total counter
holdfast_alert_notifications_total{notifier="hanging",result="dropped"} 129
holdfast_alert_notifications_total{notifier="hanging",result="failed"} 0
holdfast_alert_notifications_total{notifier="hanging",result="sent"} 0
holdfast_alert_notifications_total{notifier="rec",result="dropped"} 1
holdfast_alert_notifications_total{notifier="rec",result="failed"} 0
holdfast_alert_notifications_total{notifier="rec",result="sent"} 128
`), "holdfast_alert_notifications_total"); err != nil {
		t.Fatal(err)
	}
}

// TestDispatcherCloseDrains: alerts in the log before Start are delivered in
// order by Close; a non-critical failure never uses the backup; names stay
// distinct.
func TestDispatcherCloseDrains(t *testing.T) {
	l := openLog(t, vfs.NewMem(), buffer.Options{})
	a, b := &recorder{name: "rec"}, &recorder{name: "rec"}
	backup := &recorder{name: "sms"}
	d := NewDispatcher(DispatcherOptions{Log: l, Primary: []Notifier{a, b, NewWebhook(WebhookOptions{URL: "bad"})},
		Backup: backup, Logger: quietLogger(), UseBackup: func() bool { return true }})
	var want []Alert
	for i, sev := range []Severity{Info, Warning, Critical, Warning} {
		al := sample("r"+strconv.Itoa(i), sev)
		want = append(want, al)
	}
	appendAlerts(t, l, want...)
	closeDispatcher(t, d) // never started
	if !reflect.DeepEqual(a.Got(), want) || !reflect.DeepEqual(b.Got(), want) {
		t.Fatalf("got %+v and %+v, want %+v", a.Got(), b.Got(), want)
	}
	if got := backup.Got(); len(got) != 1 || got[0] != want[2] {
		t.Fatalf("backup got %+v", got)
	}
	names := []string{}
	for _, n := range d.Stats().Notifiers {
		names = append(names, n.Name)
	}
	if !reflect.DeepEqual(names, []string{"rec", "rec-2", "webhook", "sms"}) {
		t.Fatalf("names %v", names)
	}
	if s := statsOf(t, d, "webhook"); s.Failed != 4 {
		t.Fatalf("webhook with a bad URL: %+v", s)
	}
	if err := d.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// closingPublisher is an MQTT Publisher whose channel closes with the node, as
// mqttin.Broker and mqttin.Subscriber do: after close, Publish fails (the
// embedded broker's subscribers are gone, the external connection is down).
type closingPublisher struct {
	mu     sync.Mutex
	closed bool
	got    []string
}

func (p *closingPublisher) Publish(topic string, _ []byte, _ bool, _ byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("publisher closed")
	}
	p.got = append(p.got, topic)
	return nil
}

func (p *closingPublisher) Closed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// TestDispatcherKeepsAlertsForAClosedChannel: the node closes its MQTT broker
// (or its connection to the site's) before the dispatcher, and the processor
// writes its last alerts in between. Publishing them fails because the
// channel is closed with the node, not because the alert is undeliverable:
// the cursor must stay before them for the next start, not pass them as
// failed for good.
func TestDispatcherKeepsAlertsForAClosedChannel(t *testing.T) {
	l := openLog(t, vfs.NewMem(), buffer.Options{})
	as := alerts("hot", Warning, 2)
	pub := &closingPublisher{}
	d := NewDispatcher(DispatcherOptions{Log: l, Primary: []Notifier{NewMQTT(pub, "")}, Logger: quietLogger()})
	d.Start()
	appendAlerts(t, l, as[0])
	eventually(t, "the first alert published", func() bool { return statsOf(t, d, "mqtt").Sent == 1 })

	pub.mu.Lock()
	pub.closed = true
	pub.mu.Unlock()
	at := l.NextOffset()
	appendAlerts(t, l, as[1]) // written during shutdown
	closeDispatcher(t, d)

	if s := statsOf(t, d, "mqtt"); s.Failed != 0 {
		t.Errorf("%d alerts counted failed for good on a closed channel", s.Failed)
	}
	if off, _ := l.Cursor(CursorPrefix + "mqtt"); off > at+1 {
		t.Fatalf("cursor saved at %d, past the alert at %d that was never published", off, at+1)
	}
}

// TestDispatcherStartsAtRecoveredEnd: `recover --from-cloud` replays the log
// from the cloud's snapshot and writes the alerts the replay produces anew
// after the records the cloud held, then a checkpoint past them. Starting at
// the checkpoint (From), the new node's notifiers would pass those alerts,
// which the lost node may never have delivered. The recovery leaves
// StartCursor at the end of the cloud's records: notifiers without a cursor
// start there. Once they have cursors, a notifier added later starts at From.
func TestDispatcherStartsAtRecoveredEnd(t *testing.T) {
	l := openLog(t, vfs.NewMem(), buffer.Options{})
	as := alerts("hot", Warning, 3)
	appendAlerts(t, l, as[0]) // held by the cloud: delivered by the lost node
	cut := l.NextOffset()
	if err := l.CommitCursor(StartCursor, cut); err != nil {
		t.Fatal(err)
	}
	appendAlerts(t, l, as[1]) // written anew by the recovery's replay
	from := l.NextOffset()    // the recovered checkpoint
	appendAlerts(t, l, as[2]) // written once the node runs

	r := &recorder{name: "hook"}
	d := NewDispatcher(DispatcherOptions{Log: l, From: from, Primary: []Notifier{r}, Logger: quietLogger()})
	d.Start()
	eventually(t, "the alerts after the cloud's records", func() bool { return len(r.Got()) == 2 })
	closeDispatcher(t, d)
	if !reflect.DeepEqual(r.Got(), as[1:]) {
		t.Fatalf("delivered %v, want %v", r.Got(), as[1:])
	}

	later := &recorder{name: "later"}
	d = NewDispatcher(DispatcherOptions{Log: l, From: from, Primary: []Notifier{&recorder{name: "hook"}, later},
		Logger: quietLogger()})
	if off, _ := l.Cursor(CursorPrefix + "later"); off != from {
		t.Fatalf("a notifier added later starts at %d, want From %d", off, from)
	}
	closeDispatcher(t, d)
}
