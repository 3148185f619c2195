package process

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// spillOpts are the options of the spill tests' nodes: spill a worker's
// quiet streams every spillEvery items while SetSpill is on.
type spillOpts struct {
	spillDir   string // "" for a node that never spills
	spillEvery int
	split      bool
	workers    int
	ck         CheckpointOptions
}

func openSpillNode(t *testing.T, fs *vfs.MemFS, l *buffer.Log, o spillOpts) *node {
	t.Helper()
	if o.ck.Interval > 0 {
		o.ck.FS, o.ck.Dir = fs, "/d/checkpoints"
	}
	if l == nil {
		l = openLog(t, fs, testTailBytes)
	}
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	m := NewMetrics(nil)
	p, err := New(st, Options{
		Window:      window.Options{Sizes: []time.Duration{time.Second, 5 * time.Second}, AllowedLateness: 300 * time.Millisecond},
		Rules:       testRules,
		Workers:     o.workers,
		IdleTimeout: time.Hour, // the test writes the watermark records
		Checkpoints: o.ck,
		Metrics:     m,
		SplitAll:    o.split,
		SpillDir:    o.spillDir,
		spillEvery:  o.spillEvery,
	})
	require.NoError(t, err)
	p.Start()
	return &node{fs: fs, log: l, st: st, proc: p, metrics: m}
}

// spillStreams are the streams of the spill tests; "temp" has the rules.
var spillStreams = func() []string {
	s := []string{"temp"}
	for i := range 29 {
		s = append(s, fmt.Sprint("s", i))
	}
	return s
}()

// spillGen appends the spill tests' records: rounds of events of a few
// streams (the others stay quiet, so that they spill), and watermark records
// of quiet streams, some closing windows of a spilled stream, some only
// raising its watermark, each followed by an event of that stream just
// below the watermark, which that raise makes late.
type spillGen struct {
	rng  *rand.Rand
	last map[string]int64 // highest event time sent, by stream
}

func (g *spillGen) round(t *testing.T, clock int64, ns ...*node) {
	t.Helper()
	rng := g.rng
	active := make([]string, 1+rng.IntN(4))
	for i := range active {
		active[i] = spillStreams[rng.IntN(len(spillStreams))]
	}
	var evs []event.Event
	for range 20 + rng.IntN(30) {
		ts := clock - int64(rng.IntN(250))
		if rng.IntN(30) == 0 {
			ts -= 2000 // late
		}
		evs = append(evs, event.Event{DeviceID: fmt.Sprint("d", rng.IntN(8)), Stream: active[rng.IntN(len(active))],
			TS: ts, Value: float64(rng.IntN(100))})
	}
	g.append(t, ns, evs...)
	if rng.IntN(2) == 0 {
		return
	}
	q := spillStreams[rng.IntN(len(spillStreams))]
	last, ok := g.last[q]
	if !ok {
		return
	}
	wm := last - 300 + int64(rng.IntN(1300))
	if rng.IntN(4) == 0 {
		wm += int64(rng.IntN(5000)) // closes windows of more sizes
	}
	for _, n := range ns {
		_, err := n.st.AppendOutputs([]store.Output{{Watermark: &event.WatermarkRecord{Stream: q, Watermark: wm}}})
		require.NoError(t, err)
	}
	g.append(t, ns, event.Event{DeviceID: fmt.Sprint("d", rng.IntN(8)), Stream: q, TS: wm - int64(rng.IntN(1000)), Value: float64(rng.IntN(100))})
}

func (g *spillGen) append(t *testing.T, ns []*node, evs ...event.Event) {
	t.Helper()
	for _, n := range ns {
		_, err := n.st.Append(context.Background(), evs)
		require.NoError(t, err)
	}
	for _, e := range evs {
		if l, ok := g.last[e.Stream]; !ok || e.TS > l {
			g.last[e.Stream] = e.TS
		}
	}
}

// rawOutputs returns the window and alert records in the log as stored, by
// output key, and the event and watermark records in log order.
func rawOutputs(t *testing.T, l *buffer.Log) (outs map[string][]byte, inputs [][]byte) {
	t.Helper()
	outs = map[string][]byte{}
	r := l.NewReader(0)
	defer r.Close()
	for {
		_, p, err := r.Next()
		if err != nil {
			return outs, inputs
		}
		switch event.Type(p) {
		case event.TypeWindow:
			w, err := event.DecodeWindow(p)
			require.NoError(t, err)
			_, dup := outs[w.ID()]
			require.False(t, dup, "window %s written twice", w.ID())
			outs[w.ID()] = slices.Clone(p)
		case event.TypeAlert:
			a, err := event.DecodeAlert(p)
			require.NoError(t, err)
			k := alertKey(a.ID(), a.Firing)
			_, dup := outs[k]
			require.False(t, dup, "alert %s written twice", k)
			outs[k] = slices.Clone(p)
		case event.TypeEvent, event.TypeWatermark:
			inputs = append(inputs, slices.Clone(p))
		}
	}
}

// requireSameAsNeverSpilled closes the settled n and feeds the events and
// watermark records in its log, in log order, to a fresh node that never
// spills, crashes or splits: the window and alert records must be the same
// bytes.
func requireSameAsNeverSpilled(t *testing.T, n *node) {
	t.Helper()
	got, inputs := rawOutputs(t, n.log)
	n.close()
	refFS := vfs.NewMem()
	ref := openSpillNode(t, refFS, openLog(t, refFS, fileOnly), spillOpts{workers: 2})
	defer ref.close()
	var evs []event.Event
	flush := func() {
		if len(evs) > 0 {
			_, err := ref.st.Append(context.Background(), evs)
			require.NoError(t, err)
			evs = nil
		}
	}
	for _, p := range inputs {
		if event.Type(p) == event.TypeEvent {
			e, err := event.DecodeBinary(p)
			require.NoError(t, err)
			evs = append(evs, e)
			continue
		}
		flush()
		wm, err := event.DecodeWatermark(p)
		require.NoError(t, err)
		_, err = ref.st.AppendOutputs([]store.Output{{Watermark: &wm}})
		require.NoError(t, err)
	}
	flush()
	ref.settle(t)
	want, _ := rawOutputs(t, ref.log)
	require.Greater(t, len(want), 300)
	for k, w := range want {
		require.Equal(t, w, got[k], "record %s", k)
	}
	require.Equal(t, len(want), len(got), "window and alert records")
}

// TestSpillMatchesNeverSpilled is the property of spilling window state:
// with the workers spilling their quiet streams every few items, spilling
// turned on and off at random, streams split across workers or not, the
// worker count changed (a restart from the checkpoint written on stopping),
// and crashes and restarts from checkpoints that hold spilled streams, the log
// ends with exactly the window and alert records, byte for byte, of a
// processor that never spilled. It also holds split streams' crash recovery
// to writing each output once: a replay that spreads the devices over the
// workers differently closes a device's windows at other points of the log
// (the worker's own events advance it), after the previous run's record of
// them (worker.emit, early).
func TestSpillMatchesNeverSpilled(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprint("split=", split), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(11, 12))
			g := &spillGen{rng: rng, last: map[string]int64{}}
			fs := vfs.NewMem()
			o := spillOpts{spillDir: t.TempDir(), spillEvery: 5, split: split, workers: 2,
				ck: CheckpointOptions{Interval: 20 * time.Millisecond}}
			n := openSpillNode(t, fs, nil, o)
			n.proc.SetSpill(true)
			spills, loads, resumed := 0.0, 0.0, 0
			clock := t0
			for round := range 80 {
				if rng.IntN(4) == 0 {
					n.proc.SetSpill(!n.proc.Spilling())
				}
				if rng.IntN(6) == 0 {
					n.proc.SetWorkers(1 + rng.IntN(3)) // a restart from the checkpoint written on stopping
				}
				for range 3 + rng.IntN(8) {
					clock += 100
					g.round(t, clock, n)
				}
				time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
				if round%8 != 7 {
					continue
				}
				spills += promtest.ToFloat64(n.metrics.Spills)
				loads += promtest.ToFloat64(n.metrics.SpillLoads)
				fs.Crash(func(_ string, unsynced []byte) []byte { return unsynced[:rng.IntN(len(unsynced)+1)] })
				fs.Inject(func(vfs.Op, string) error { return vfs.ErrCrashed })
				n.close()
				fs.Inject(nil)
				o.workers = 1 + rng.IntN(3)
				n = openSpillNode(t, fs, nil, o)
				if n.proc.start > 0 {
					resumed++
				}
				n.proc.SetSpill(rng.IntN(2) == 0)
			}
			n.caughtUp(t)
			spills += promtest.ToFloat64(n.metrics.Spills)
			loads += promtest.ToFloat64(n.metrics.SpillLoads)
			t.Logf("%v streams spilled, %v loaded back; %d of 10 restarts from a checkpoint", spills, loads, resumed)
			require.Positive(t, spills)
			require.Positive(t, loads)
			require.Positive(t, resumed, "restarts from checkpoints holding spilled streams")
			require.Zero(t, n.proc.mismatches.Load(), "replays found every output equal to the log's")
			n.proc.Close()
			requireSameAsNeverSpilled(t, n)
		})
	}
}

// openState is what queries and status show of a processor's open windows,
// comparable exactly.
func openState(t *testing.T, p *Processor) (results, partials []string, st Status) {
	t.Helper()
	for _, r := range p.Open("", "*", 0, math.MinInt64, math.MaxInt64) {
		sk, err := r.Sketch.MarshalBinary()
		require.NoError(t, err)
		f := math.Float64bits
		results = append(results, fmt.Sprint(r.Stream, r.DeviceID, r.Size, r.Start, r.Count, f(r.Sum), f(r.Min), f(r.Max),
			f(r.Mean), f(r.Last), r.LastTS, f(r.P50), f(r.P95), f(r.P99), r.Overflow, r.Final, sk))
	}
	for _, pt := range p.OpenPartials("", "*", 0, math.MinInt64, math.MaxInt64) {
		partials = append(partials, string(pt.AppendBinary(nil)))
	}
	slices.Sort(results)
	slices.Sort(partials)
	return results, partials, p.Status()
}

// TestSpilledStreamsAnswerQueries: a processor that spills answers Open,
// OpenPartials and Status (open windows, late events) as one that does not,
// without loading the spilled streams; turned off, it loads them back.
func TestSpilledStreamsAnswerQueries(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	g := &spillGen{rng: rng, last: map[string]int64{}}
	a := openSpillNode(t, vfs.NewMem(), nil, spillOpts{spillDir: t.TempDir(), spillEvery: 5, workers: 2})
	defer a.close()
	b := openSpillNode(t, vfs.NewMem(), nil, spillOpts{workers: 2})
	defer b.close()
	a.proc.SetSpill(true)
	clock, sawSpilled := t0, 0
	for range 15 {
		for range 3 + rng.IntN(5) {
			clock += 100
			g.round(t, clock, a, b)
		}
		a.caughtUp(t)
		b.caughtUp(t)
		loads := promtest.ToFloat64(a.metrics.SpillLoads)
		ra, pa, sa := openState(t, a.proc)
		rb, pb, sb := openState(t, b.proc)
		require.Equal(t, loads, promtest.ToFloat64(a.metrics.SpillLoads), "queries load nothing")
		require.NotEmpty(t, rb)
		require.Equal(t, rb, ra)
		require.Equal(t, pb, pa)
		require.Equal(t, sb.OpenWindows, sa.OpenWindows)
		require.Equal(t, sb.Late, sa.Late)
		require.Zero(t, sb.SpilledStreams)
		require.Equal(t, float64(sa.SpilledStreams), promtest.ToFloat64(a.metrics.SpilledStreams))
		sawSpilled = max(sawSpilled, sa.SpilledStreams)
	}
	require.Positive(t, sawSpilled)
	require.Positive(t, promtest.ToFloat64(a.metrics.SpillBytes))

	// Off, each worker loads its streams back at its next tick: here, after
	// its next spillEvery items.
	a.proc.SetSpill(false)
	for range 30 {
		clock += 100
		g.round(t, clock, a, b)
		a.caughtUp(t)
		if a.proc.Status().SpilledStreams == 0 {
			break
		}
	}
	b.caughtUp(t)
	require.Zero(t, a.proc.Status().SpilledStreams, "spilling off loads every stream back")
	require.Zero(t, promtest.ToFloat64(a.metrics.SpillBytes))
	ra, _, _ := openState(t, a.proc)
	rb, _, _ := openState(t, b.proc)
	require.Equal(t, rb, ra)
}

// TestSpillFileCompacts: streams loaded back leave garbage in the spill
// file; once it is most of a file of 1 MiB or more the live records move to
// a new file, and every stream still loads back exactly; with none left
// spilled the file is empty.
func TestSpillFileCompacts(t *testing.T) {
	p := &Processor{opts: Options{SpillDir: t.TempDir()}.withDefaults()}
	p.spillOn.Store(true)
	w, err := newWorker(p, 0)
	require.NoError(t, err)
	defer w.closeSpill()
	want := map[string][]byte{}
	for s := range 800 {
		name := fmt.Sprint("stream-", s)
		w.stream(name)
		for d := range 20 {
			for i := range 3 {
				w.win.Add(name, fmt.Sprint("device-", d), t0+int64(i*1000), float64(s*d+i))
			}
		}
		want[name] = w.win.AppendStreamState(nil, name)
	}
	w.spillPass()
	w.spillPass()
	require.Len(t, w.spilled, 800)
	full := w.spill.size
	require.GreaterOrEqual(t, full, int64(compactMin))
	for s := range 700 {
		w.load(fmt.Sprint("stream-", s))
	}
	require.Less(t, w.spill.size, full/4, "compacted")
	st, err := os.Stat(w.spill.path)
	require.NoError(t, err)
	require.Equal(t, w.spill.size, st.Size())
	w.loadAll()
	require.Empty(t, w.spilled)
	require.Zero(t, w.spill.size)
	for name, state := range want {
		require.Equal(t, state, w.win.AppendStreamState(nil, name), name)
	}
}

// TestSpillFailureKeepsStateInMemory: a spill file that cannot be written
// leaves every stream in the engine, as if spilling were off.
func TestSpillFailureKeepsStateInMemory(t *testing.T) {
	p := &Processor{opts: Options{SpillDir: filepath.Join(t.TempDir(), "gone")}.withDefaults()}
	p.spillOn.Store(true)
	w, err := newWorker(p, 0)
	require.NoError(t, err)
	defer w.closeSpill()
	w.stream("s")
	w.win.Add("s", "d", t0, 1)
	open := w.win.OpenWindows()
	w.spillPass()
	w.spillPass()
	require.Empty(t, w.spilled)
	require.True(t, w.spillFailing)
	require.Equal(t, open, w.win.OpenWindows())
	require.Equal(t, []string{"s"}, w.win.Streams())
}

// TestWatermarkLoadsOnlyWhatItCloses: a watermark below a spilled stream's
// earliest window end is remembered without loading it (idle timeouts read
// the remembered one); one that reaches it loads the stream and closes the
// window, as if it had never been spilled.
func TestWatermarkLoadsOnlyWhatItCloses(t *testing.T) {
	p := &Processor{opts: Options{SpillDir: t.TempDir(),
		Window: window.Options{Sizes: []time.Duration{time.Second}, AllowedLateness: window.NoLateness}}.withDefaults()}
	p.spillOn.Store(true)
	w, err := newWorker(p, 0)
	require.NoError(t, err)
	defer w.closeSpill()
	w.live = true
	w.stream("s")
	w.win.Add("s", "d", t0+100, 1)
	w.spillPass()
	w.spillPass()
	require.Contains(t, w.spilled, "s")
	end, ok := w.earliestEnd("s")
	require.True(t, ok)
	require.Equal(t, t0+1000, end)

	w.advance("s", t0+900)
	require.Contains(t, w.spilled, "s", "a watermark that closes nothing loads nothing")
	wm, _ := w.watermark("s")
	require.Equal(t, t0+900, wm)
	require.Empty(t, w.outs)
	require.Equal(t, 2, w.openWindows())

	w.advance("s", t0+1000)
	require.NotContains(t, w.spilled, "s")
	require.Len(t, w.outs, 2, "the device's and the site-wide window closed")
	require.Equal(t, 0, w.openWindows())
}
