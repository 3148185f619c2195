package process

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).UnixMilli()

var testRules = []alert.Rule{
	{Name: "hot", Stream: "temp", Op: ">", Threshold: 90, ForCount: 2, Severity: alert.Critical},
	{Name: "avg", Stream: "temp", Source: alert.SourceWindow, Window: time.Second, Aggregate: "mean", Op: ">", Threshold: 55},
}

type node struct {
	fs      *vfs.MemFS
	log     *buffer.Log
	st      *store.Store
	proc    *Processor
	metrics *Metrics
}

func openNode(t *testing.T, fs *vfs.MemFS, workers int) *node {
	t.Helper()
	return openNodeWith(t, fs, workers, CheckpointOptions{})
}

// testTailBytes is the log's tail in memory (buffer.Options.TailBytes) for the
// nodes the property tests crash, degrade and split: a few commit groups, so
// that their processors read the live end from memory and fall back to the
// file whenever they are further behind; the reference node they are
// compared with reads only the file (fileOnly).
const testTailBytes = 4 << 10

// logReads counts, over every node a test opens, the bytes their logs'
// readers took from memory and from the files.
var logReads = buffer.NewMetrics(nil)

// openLog opens the node's log on fs with a tail of tail bytes.
func openLog(t *testing.T, fs *vfs.MemFS, tail int) *buffer.Log {
	t.Helper()
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: fs, SegmentBytes: 64 << 10, MaxBytes: 1 << 30,
		TailBytes: tail, Metrics: logReads})
	require.NoError(t, err)
	return l
}

// logReadBytes returns the bytes read so far by the nodes' log readers from
// memory and from the files.
func logReadBytes() (tail, file float64) {
	return promtest.ToFloat64(logReads.TailReadBytes), promtest.ToFloat64(logReads.FileReadBytes)
}

// requireReadBoth: since logReadBytes returned tail0 and file0, the nodes'
// readers read from memory and, having fallen behind the tail or restarted,
// from the files.
func requireReadBoth(t *testing.T, tail0, file0 float64) {
	t.Helper()
	tail, file := logReadBytes()
	require.Greater(t, tail, tail0, "read from the log's tail in memory")
	require.Greater(t, file, file0, "read from the log's files")
}

// openNodeWith opens a node whose processor takes checkpoints as ck says
// (on fs, in /d/checkpoints, when ck.Interval is set).
func openNodeWith(t *testing.T, fs *vfs.MemFS, workers int, ck CheckpointOptions) *node {
	t.Helper()
	return openNodeOn(t, openLog(t, fs, testTailBytes), fs, workers, ck)
}

// fileOnly is TailBytes for a log whose readers read only the files.
const fileOnly = -1

func openNodeOn(t *testing.T, l *buffer.Log, fs *vfs.MemFS, workers int, ck CheckpointOptions) *node {
	t.Helper()
	n := prepareNodeOn(t, l, fs, workers, ck)
	n.proc.Start()
	return n
}

// prepareNodeOn is openNodeOn without starting the processor.
func prepareNodeOn(t *testing.T, l *buffer.Log, fs *vfs.MemFS, workers int, ck CheckpointOptions) *node {
	t.Helper()
	if ck.Interval > 0 {
		ck.FS, ck.Dir = fs, "/d/checkpoints"
	}
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	m := NewMetrics(nil)
	p, err := New(st, Options{
		Window:  window.Options{Sizes: []time.Duration{time.Second, 5 * time.Second}, AllowedLateness: 300 * time.Millisecond},
		Rules:   testRules,
		Workers: workers,
		// No idle closes: the comparison below is of event-driven closes.
		IdleTimeout: time.Hour,
		Checkpoints: ck,
		Metrics:     m,
	})
	require.NoError(t, err)
	return &node{fs: fs, log: l, st: st, proc: p, metrics: m}
}

func (n *node) close() {
	n.proc.Close()
	n.log.Close()
}

// settle waits until the processor has handled every record in the log, then
// stops it, which writes every output it holds: the log is then final.
func (n *node) settle(t *testing.T) {
	t.Helper()
	n.caughtUp(t)
	n.proc.Close()
}

// caughtUp waits until the processor has handled every record in the log and
// its writer has flushed.
func (n *node) caughtUp(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := n.proc.Status()
		if !s.Replaying && s.Lag == 0 {
			before := n.log.DurableOffset()
			time.Sleep(60 * time.Millisecond) // > FlushInterval: outputs written
			if n.log.DurableOffset() == before && n.proc.Status().Lag == 0 {
				return
			}
		}
		require.True(t, time.Now().Before(deadline), "processor did not catch up: %+v", s)
		time.Sleep(5 * time.Millisecond)
	}
}

// outputs returns every window and alert record in the log, by id.
func outputs(t *testing.T, n *node) (windows map[string]event.WindowRecord, alerts map[string]int) {
	t.Helper()
	windows, alerts = map[string]event.WindowRecord{}, map[string]int{}
	r := n.log.NewReader(0)
	defer r.Close()
	for {
		_, p, err := r.Next()
		if err != nil {
			return windows, alerts
		}
		switch event.Type(p) {
		case event.TypeWindow:
			w, err := event.DecodeWindow(p)
			require.NoError(t, err)
			_, dup := windows[w.ID()]
			require.False(t, dup, "window %s written twice", w.ID())
			w.Sketch = nil
			windows[w.ID()] = w
		case event.TypeAlert:
			a, err := event.DecodeAlert(p)
			require.NoError(t, err)
			alerts[alertKey(a.ID(), a.Firing)]++
		}
	}
}

func batch(rng *rand.Rand, clock int64, n int) []event.Event {
	evs := make([]event.Event, n)
	for i := range evs {
		ts := clock - int64(rng.IntN(250))
		if rng.IntN(40) == 0 {
			ts -= 2000 // late
		}
		evs[i] = event.Event{DeviceID: fmt.Sprint("d", rng.IntN(7)), Stream: []string{"temp", "hum", "co2"}[rng.IntN(3)],
			TS: ts, Value: float64(rng.IntN(100))}
	}
	return evs
}

// TestCrashesMatchAnUninterruptedRun appends events while the processor
// runs, crashes the in-memory machine at random moments (torn writes
// included), restarts, and at the end compares the window and alert records
// with those of a node that processed the same events without a crash: the
// same set, each exactly once.
func TestCrashesMatchAnUninterruptedRun(t *testing.T) {
	t.Run("replay from the start", func(t *testing.T) { crashesMatch(t, CheckpointOptions{}) })
	// Checkpoints every 20 ms: crashes land before, during and after
	// checkpoint writes, and restarts resume from them.
	t.Run("checkpoints", func(t *testing.T) { crashesMatch(t, CheckpointOptions{Interval: 20 * time.Millisecond}) })
}

func crashesMatch(t *testing.T, ck CheckpointOptions) {
	rng := rand.New(rand.NewPCG(5, 6))
	fs := vfs.NewMem()
	tail0, file0 := logReadBytes()
	n := openNodeWith(t, fs, 2, ck)
	resumed := 0
	clock := t0
	var sent [][]event.Event
	for round := range 25 {
		for range 10 + rng.IntN(20) {
			clock += 100
			b := batch(rng, clock, 30)
			if _, err := n.st.Append(context.Background(), b); err != nil {
				break
			}
			sent = append(sent, b)
		}
		time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
		if ck.Interval > 0 && round%2 == 0 {
			// Every other crash comes after this run wrote a checkpoint, so
			// that restarts from one are tested however slow the machine:
			// the random sleeps alone let a loaded machine crash every run
			// before its first checkpoint.
			deadline := time.Now().Add(10 * time.Second)
			for promtest.ToFloat64(n.metrics.Checkpoints) == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		fs.Crash(func(_ string, unsynced []byte) []byte { return unsynced[:rng.IntN(len(unsynced)+1)] })
		// The crashed process is gone: nothing it does while its goroutines
		// wind down reaches the disk (no shutdown checkpoint).
		fs.Inject(func(vfs.Op, string) error { return vfs.ErrCrashed })
		n.close()
		fs.Inject(nil)
		n = openNodeWith(t, fs, 1+round%3, ck) // the worker count may change between runs
		if n.proc.start > 0 {
			resumed++
		}
	}
	if ck.Interval > 0 {
		t.Logf("%d of 25 restarts resumed from a checkpoint", resumed)
		require.GreaterOrEqual(t, resumed, 12, "restarts should resume from checkpoints")
	}
	n.settle(t)
	requireReadBoth(t, tail0, file0)
	requireSameAsReference(t, n, 200)
}

// requireSameAsReference closes the settled n and compares the window and
// alert records in its log with those of a fresh node, never crashed,
// degraded or split, reading its log only from the files and decoding every
// event from its record, fed the events that
// survived in n's log, in log order:
// the same set, bit for bit, each once; at least minWindows windows and one
// alert.
func requireSameAsReference(t *testing.T, n *node, minWindows int) {
	t.Helper()
	gotW, gotA := outputs(t, n)
	var survived []event.Event
	r := n.log.NewReader(0)
	for {
		_, p, err := r.Next()
		if err != nil {
			break
		}
		if event.Type(p) == event.TypeEvent {
			e, err := event.DecodeBinary(p)
			require.NoError(t, err)
			survived = append(survived, e)
		}
	}
	r.Close()
	n.close()

	// The reference reads the log only from its files, and decodes every
	// event from its record.
	refFS := vfs.NewMem()
	ref := prepareNodeOn(t, openLog(t, refFS, fileOnly), refFS, 2, CheckpointOptions{})
	ref.proc.fed = nil
	ref.proc.Start()
	defer ref.close()
	for i := 0; i < len(survived); i += 100 {
		_, err := ref.st.Append(context.Background(), survived[i:min(i+100, len(survived))])
		require.NoError(t, err)
	}
	ref.settle(t)
	wantW, wantA := outputs(t, ref)
	require.Greater(t, len(wantW), minWindows)
	require.NotEmpty(t, wantA)
	diffWindows(t, wantW, gotW)
	require.True(t, reflect.DeepEqual(wantW, gotW), "window records differ (above)")
	require.Equal(t, wantA, gotA)
	for k, c := range gotA {
		require.Equal(t, 1, c, "alert %s written %d times", k, c)
	}
}

// TestLateEventsAreFlagged: an event behind the watermark is stored, counted
// and flagged, and not in the closed window.
func TestLateEventsAreFlagged(t *testing.T) {
	n := openNode(t, vfs.NewMem(), 1)
	defer n.close()
	ctx := context.Background()
	evs := []event.Event{
		{DeviceID: "d", Stream: "s", TS: t0 + 100, Value: 1},
		{DeviceID: "d", Stream: "s", TS: t0 + 2000, Value: 2}, // watermark 1700: closes [t0, t0+1s)
		{DeviceID: "d", Stream: "s", TS: t0 + 500, Value: 3},  // late for 1s, on time for 5s
	}
	for _, e := range evs {
		_, err := n.st.Append(ctx, []event.Event{e})
		require.NoError(t, err)
	}
	n.caughtUp(t)
	p, err := n.st.Query(store.Query{DeviceID: "d"})
	require.NoError(t, err)
	require.Len(t, p.Events, 3)
	require.True(t, p.Events[0].Late)
	require.False(t, p.Events[1].Late)
	require.Equal(t, uint64(1), n.proc.Status().Late["s"])
	wp, err := n.st.QueryWindows(store.WindowQuery{Stream: "s", DeviceID: "d"})
	require.NoError(t, err)
	require.Len(t, wp.Windows, 1)
	require.Equal(t, uint64(1), wp.Windows[0].Count, "the late event is not in the closed window")
	open := n.proc.Open("s", "d", 5*time.Second, t0, t0+5000)
	require.Len(t, open, 1)
	require.Equal(t, uint64(3), open[0].Count, "the 5s window was still open for it")
	require.False(t, open[0].Final)
}

// TestIdleStreamClosesThroughTheLog: a quiet stream's windows close after the
// idle timeout, through a watermark record that a replay applies at the same
// place.
func TestIdleStreamClosesThroughTheLog(t *testing.T) {
	fs := vfs.NewMem()
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: fs})
	require.NoError(t, err)
	defer l.Close()
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	clk := clock.NewFake(time.UnixMilli(t0 + 10_000))
	p, err := New(st, Options{
		Window:      window.Options{Sizes: []time.Duration{time.Second}, AllowedLateness: window.NoLateness},
		IdleTimeout: time.Second, Workers: 1, clock: clk,
	})
	require.NoError(t, err)
	p.Start()
	defer p.Close()
	_, err = st.Append(context.Background(), []event.Event{{DeviceID: "d", Stream: "s", TS: t0, Value: 7}})
	require.NoError(t, err)
	for p.Status().Processed < 1 {
		time.Sleep(time.Millisecond)
	}
	// Quiet for longer than the idle timeout (the fake clock moves; the
	// ticker runs in real time).
	clk.Advance(5 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		wp, err := st.QueryWindows(store.WindowQuery{Stream: "s", DeviceID: "d"})
		require.NoError(t, err)
		if len(wp.Windows) == 1 {
			require.Equal(t, uint64(1), wp.Windows[0].Count)
			break
		}
		require.True(t, time.Now().Before(deadline), "idle window never closed")
		time.Sleep(20 * time.Millisecond)
	}
	// The watermark record is in the log.
	r := l.NewReader(0)
	defer r.Close()
	found := false
	for {
		_, p, err := r.Next()
		if err != nil {
			break
		}
		found = found || event.Type(p) == event.TypeWatermark
	}
	require.True(t, found)
}

// diffWindows logs how two sets of window records differ, briefly.
func diffWindows(t *testing.T, want, got map[string]event.WindowRecord) {
	t.Helper()
	missing, extra, differ := 0, 0, 0
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			if missing++; missing <= 3 {
				t.Logf("missing %s: %+v", id, w)
			}
		case !reflect.DeepEqual(g, w):
			if differ++; differ <= 3 {
				t.Logf("differs %s:\n want %+v\n got  %+v", id, w, g)
			}
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			if extra++; extra <= 3 {
				t.Logf("extra %s: %+v", id, g)
			}
		}
	}
	if missing+extra+differ > 0 {
		t.Logf("%d missing, %d extra, %d differ of %d", missing, extra, differ, len(want))
	}
}
