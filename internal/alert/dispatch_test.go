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

// TestDispatcherBackupOnFailure: with the webhook down, a critical alert reaches
// the backup script after the webhook's retries; a warning does not.
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
			log := &recorder{name: "log"}
			d := NewDispatcher(DispatcherOptions{
				Primary: []Notifier{log, NewWebhook(WebhookOptions{URL: srv.URL, Retry: fastRetry(2)})},
				Backup:  NewCommand(CommandOptions{Path: writeScript(t, "backup.sh", backupScript)}),
				Logger:  quietLogger(),
			})
			d.Start()
			warn, crit := sample("warm", Warning), sample("hot", Critical)
			d.Send(warn)
			d.Send(crit)
			eventually(t, "the critical alert in the backup output", func() bool { return len(readRecords(t, out)) > 0 })
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
			want := Stats{Notifiers: []NotifierStats{
				{Name: "log", Sent: 2},
				{Name: "webhook", Failed: 2},
				{Name: "command", Backup: true, Sent: 1},
			}, BackupFailover: 1}
			if !reflect.DeepEqual(s, want) {
				t.Fatalf("stats %+v\nwant %+v", s, want)
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
	d := NewDispatcher(DispatcherOptions{
		Primary:   []Notifier{NewWebhook(WebhookOptions{URL: srv.URL, Retry: fastRetry(1)})},
		Backup:    NewCommand(CommandOptions{Path: writeScript(t, "backup.sh", backupScript)}),
		Logger:    quietLogger(),
		UseBackup: offline.Load,
	})
	d.Start()
	crit, warn := sample("hot", Critical), sample("warm", Warning)
	d.Send(crit)
	d.Send(warn)
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

// TestDispatcherSendNeverBlocks: with a notifier hung, Send returns at once;
// what does not fit the queue is dropped and counted, and a second notifier is
// not held up.
func TestDispatcherSendNeverBlocks(t *testing.T) {
	h := &hanging{entered: make(chan struct{}, 1)}
	rec := &recorder{name: "rec"}
	reg := prometheus.NewPedanticRegistry()
	d := NewDispatcher(DispatcherOptions{Primary: []Notifier{h, rec}, QueueSize: 100, Logger: quietLogger(),
		Registerer: reg})
	d.Start()
	all := alerts("hot", Warning, 200)
	d.Send(all[0])
	select {
	case <-h.entered:
	case <-time.After(waitFor):
		t.Fatal("hanging notifier never called")
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for _, a := range all[1:100] {
			d.Send(a)
		}
		eventuallyNoFatal(func() bool { return len(rec.Got()) == 100 })
		for _, a := range all[100:] {
			d.Send(a)
		}
	}()
	select {
	case <-sent:
	case <-time.After(waitFor):
		t.Fatal("Send blocked")
	}
	eventually(t, "the recorder to get all alerts", func() bool { return len(rec.Got()) == len(all) })
	if !reflect.DeepEqual(rec.Got(), all) {
		t.Fatal("the recorder did not get the alerts in order")
	}
	// One in flight, 100 queued, 99 dropped.
	if s := statsOf(t, d, "hanging"); s.Queued != 100 || s.Dropped != 99 || s.Sent != 0 {
		t.Fatalf("hanging notifier stats %+v", s)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP holdfast_alert_queue_length Alerts waiting in a notifier's queue.
# TYPE holdfast_alert_queue_length gauge
holdfast_alert_queue_length{notifier="hanging"} 100
holdfast_alert_queue_length{notifier="rec"} 0
`), "holdfast_alert_queue_length"); err != nil {
		t.Fatal(err)
	}

	// Close gives up at its deadline: the call in flight is cancelled and the
	// queue is dropped and counted.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v", err)
	}
	if s := statsOf(t, d, "hanging"); s.Queued != 0 || s.Dropped != 200 || s.Sent+s.Failed != 0 {
		t.Fatalf("after Close: %+v", s)
	}
	if !h.closed.Load() {
		t.Fatal("Close did not close the notifier")
	}
	d.Send(all[0]) // after Close: dropped, no panic
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP holdfast_alert_notifications_total Alert notifications by notifier and result: sent, failed (retries exhausted or rejected), dropped (never attempted).
# TYPE holdfast_alert_notifications_total counter
holdfast_alert_notifications_total{notifier="hanging",result="dropped"} 201
holdfast_alert_notifications_total{notifier="hanging",result="failed"} 0
holdfast_alert_notifications_total{notifier="hanging",result="sent"} 0
holdfast_alert_notifications_total{notifier="rec",result="dropped"} 1
holdfast_alert_notifications_total{notifier="rec",result="failed"} 0
holdfast_alert_notifications_total{notifier="rec",result="sent"} 200
`), "holdfast_alert_notifications_total"); err != nil {
		t.Fatal(err)
	}
}

// eventuallyNoFatal polls like eventually, from a goroutine that must not Fatal.
func eventuallyNoFatal(cond func() bool) {
	deadline := time.Now().Add(waitFor)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// TestDispatcherCloseDrains: alerts sent before Start are delivered in order by
// Close; a non-critical failure never uses the backup; names stay distinct.
func TestDispatcherCloseDrains(t *testing.T) {
	a, b := &recorder{name: "rec"}, &recorder{name: "rec"}
	backup := &recorder{name: "sms"}
	d := NewDispatcher(DispatcherOptions{Primary: []Notifier{a, b, NewWebhook(WebhookOptions{URL: "bad"})},
		Backup: backup, Logger: quietLogger(), UseBackup: func() bool { return true }})
	var want []Alert
	for i, sev := range []Severity{Info, Warning, Critical, Warning} {
		al := sample("r"+strconv.Itoa(i), sev)
		want = append(want, al)
		d.Send(al)
	}
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
