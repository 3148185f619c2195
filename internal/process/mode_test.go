package process

import (
	"context"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// deferrals counts what OnDeferred reported.
type deferrals struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (d *deferrals) add(what, _ string, n uint64) {
	d.mu.Lock()
	d.n[what] += n
	d.mu.Unlock()
}

func (d *deferrals) get(what string) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[what]
}

// openModeNode is openNodeWith, with Limited keeping the 5 s windows only
// and what degraded modes hold back counted in d.
func openModeNode(t *testing.T, fs *vfs.MemFS, ck CheckpointOptions, d *deferrals) *node {
	t.Helper()
	if ck.Interval > 0 {
		ck.FS, ck.Dir = fs, "/d/checkpoints"
	}
	l := openLog(t, fs, testTailBytes)
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	m := NewMetrics(nil)
	p, err := New(st, Options{
		Window:       window.Options{Sizes: []time.Duration{time.Second, 5 * time.Second}, AllowedLateness: 300 * time.Millisecond},
		Rules:        testRules,
		Workers:      2,
		IdleTimeout:  time.Hour,
		Checkpoints:  ck,
		Metrics:      m,
		LimitedSizes: []time.Duration{5 * time.Second},
		OnDeferred:   d.add,
	})
	require.NoError(t, err)
	p.Start()
	return &node{fs: fs, log: l, st: st, proc: p, metrics: m}
}

// recomputed waits for the restart a better mode started, then for the
// processor to catch up.
func (n *node) recomputed(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { _, r := n.proc.Mode(); return !r }, 20*time.Second, 5*time.Millisecond)
	n.caughtUp(t)
}

// sizesIn counts the window records in the log by size.
func sizesIn(t *testing.T, n *node) map[int64]int {
	w, _ := outputs(t, n)
	out := map[int64]int{}
	for _, r := range w {
		out[r.SizeMS]++
	}
	return out
}

func alertsOf(t *testing.T, n *node, rule string) int {
	_, a := outputs(t, n)
	c := 0
	for k := range a {
		if len(k) > len(rule) && k[:len(rule)+1] == rule+"/" {
			c++
		}
	}
	return c
}

// TestLimitedAndMinimalHoldBackAndRecompute walks the modes of the
// degradation matrix: Limited writes the 5 s windows live and holds the
// 1 s windows and the rule on them back; Minimal writes no window and fires
// only the critical event rule; the step back to Full writes everything
// held back, and the log then holds exactly what a processor that was never
// degraded writes for the same events.
func TestLimitedAndMinimalHoldBackAndRecompute(t *testing.T) {
	d := &deferrals{n: map[string]uint64{}}
	n := openModeNode(t, vfs.NewMem(), CheckpointOptions{Interval: 10 * time.Millisecond}, d)
	defer n.close()
	ctx := context.Background()
	var sent []event.Event
	appendSpan := func(from, to int64, value func(i int) float64) {
		var b []event.Event
		for i, ts := 0, from; ts < to; i, ts = i+1, ts+100 {
			b = append(b, event.Event{DeviceID: "d1", Stream: "temp", TS: ts, Value: value(i)})
		}
		_, err := n.st.Append(ctx, b)
		require.NoError(t, err)
		sent = append(sent, b...)
	}
	warm := func(int) float64 { return 60 } // the 1 s mean rule (> 55) fires
	appendSpan(t0, t0+6000, warm)
	n.caughtUp(t)
	before := sizesIn(t, n)
	require.Positive(t, before[1000])
	require.Positive(t, before[5000])
	avgBefore := alertsOf(t, n, "avg")
	require.Positive(t, avgBefore, "the window rule fires before the level rises")

	n.proc.SetMode(Limited)
	appendSpan(t0+6000, t0+21000, func(i int) float64 { return float64(40 + 30*(i/10%2)) }) // 1 s means 40, 70, 40…
	n.caughtUp(t)
	lim := sizesIn(t, n)
	require.Equal(t, before[1000], lim[1000], "Limited writes no 1 s window")
	require.Greater(t, lim[5000], before[5000], "Limited writes the 5 s windows live")
	require.Equal(t, avgBefore, alertsOf(t, n, "avg"), "the rule on 1 s windows waits")
	require.Positive(t, d.get(DeferredWindows))

	n.proc.SetMode(Minimal)
	hot := func(i int) float64 { return 95 } // the critical event rule fires
	appendSpan(t0+21000, t0+31000, hot)
	n.caughtUp(t)
	minW := sizesIn(t, n)
	require.Equal(t, lim, minW, "Minimal writes no window")
	require.Eventually(t, func() bool { return alertsOf(t, n, "hot") > 0 }, 10*time.Second, 10*time.Millisecond,
		"the critical event rule runs at Minimal")
	require.Equal(t, uint64(100), d.get(Unwindowed), "every event Minimal did not window is counted")

	n.proc.SetMode(Limited) // better: recomputes, then goes on limited
	n.recomputed(t)
	n.proc.SetMode(Full)
	n.recomputed(t)
	appendSpan(t0+31000, t0+40000, warm)
	n.settle(t)
	gotW, gotA := outputs(t, n)

	ref := openNode(t, vfs.NewMem(), 2)
	defer ref.close()
	ref.proc.opts.LimitedSizes = nil
	_, err := ref.st.Append(ctx, sent)
	require.NoError(t, err)
	ref.settle(t)
	wantW, wantA := outputs(t, ref)
	diffWindows(t, wantW, gotW)
	require.True(t, reflect.DeepEqual(wantW, gotW), "window records differ (above)")
	require.Equal(t, wantA, gotA)
	require.Zero(t, n.proc.mismatches.Load(), "the replay found every degraded output equal to its own")
}

// TestModesWithCrashesMatchAFullRun switches modes and worker counts at
// random while events arrive, crashes and restarts the machine now and then, and at the end
// compares the log's window and alert records with a processor that was
// never degraded: the same set, each once.
func TestModesWithCrashesMatchAFullRun(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	fs := vfs.NewMem()
	tail0, file0 := logReadBytes()
	d := &deferrals{n: map[string]uint64{}}
	ck := CheckpointOptions{Interval: 20 * time.Millisecond}
	n := openModeNode(t, fs, ck, d)
	clock := t0
	for round := range 30 {
		n.proc.SetMode(Mode(rng.IntN(3)))
		if rng.IntN(3) == 0 {
			n.proc.SetWorkers(1 + rng.IntN(3)) // the scaling triggers' action
		}
		for range 5 + rng.IntN(10) {
			clock += 100
			if _, err := n.st.Append(context.Background(), batch(rng, clock, 30)); err != nil {
				break
			}
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		if round%5 != 4 {
			continue
		}
		fs.Crash(func(_ string, unsynced []byte) []byte { return unsynced[:rng.IntN(len(unsynced)+1)] })
		fs.Inject(func(vfs.Op, string) error { return vfs.ErrCrashed })
		n.close()
		fs.Inject(nil)
		n = openModeNode(t, fs, ck, d)
	}
	n.proc.SetMode(Full)
	n.proc.SetWorkers(3)
	n.recomputed(t)
	running, asked := n.proc.Workers()
	require.Equal(t, 3, running)
	require.Equal(t, 3, asked)
	require.Equal(t, 3, n.proc.Status().Workers)
	n.settle(t)
	require.Positive(t, d.get(DeferredWindows)+d.get(Unwindowed), "the modes held something back")
	requireReadBoth(t, tail0, file0)
	requireSameAsReference(t, n, 100)
}
