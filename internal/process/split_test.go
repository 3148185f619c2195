package process

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// openSplitNode opens a node whose processor splits streams as asked.
func openSplitNode(t *testing.T, fs *vfs.MemFS, workers int, all bool, split []string) *node {
	t.Helper()
	l := openLog(t, fs, testTailBytes)
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	m := NewMetrics(nil)
	p, err := New(st, Options{
		Window:      window.Options{Sizes: []time.Duration{time.Second, 5 * time.Second}, AllowedLateness: 300 * time.Millisecond},
		Rules:       testRules,
		Workers:     workers,
		IdleTimeout: time.Hour,
		Checkpoints: CheckpointOptions{FS: fs, Dir: "/d/checkpoints", Interval: 15 * time.Millisecond},
		Metrics:     m,
		SplitAll:    all,
		Split:       split,
	})
	require.NoError(t, err)
	p.Start()
	return &node{fs: fs, log: l, st: st, proc: p, metrics: m}
}

// TestSplitStreamsMatchUnsplit is the property of hot-stream splitting:
// with streams split across workers — all of them, some, none, changed at
// random, with the worker count, while events (late ones among them)
// arrive, and with crashes and restarts from checkpoints taken while split
// — the log ends with exactly the window and alert records of a processor
// that never split: the same set, bit for bit, each once. (The unsplit
// engine is checked against brute force in internal/window.)
func TestSplitStreamsMatchUnsplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	fs := vfs.NewMem()
	tail0, file0 := logReadBytes()
	n := openSplitNode(t, fs, 3, true, nil)
	clock := t0
	splits := 0
	for round := range 30 {
		switch rng.IntN(4) {
		case 0:
			n.proc.SetSplit(nil, true)
		case 1:
			n.proc.SetSplit([]string{"temp"}, false)
		case 2:
			n.proc.SetSplit([]string{"hum", "co2"}, false)
		}
		if rng.IntN(4) == 0 {
			n.proc.SetWorkers(2 + rng.IntN(2))
		}
		for range 5 + rng.IntN(10) {
			clock += 100
			if _, err := n.st.Append(context.Background(), splitBatch(rng, clock, 30)); err != nil {
				break
			}
		}
		if s, all := n.proc.Split(); all || len(s) > 0 {
			splits++
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		if round%6 != 5 {
			continue
		}
		fs.Crash(func(_ string, unsynced []byte) []byte { return unsynced[:rng.IntN(len(unsynced)+1)] })
		fs.Inject(func(vfs.Op, string) error { return vfs.ErrCrashed })
		n.close()
		fs.Inject(nil)
		n = openSplitNode(t, fs, 2+rng.IntN(2), rng.IntN(2) == 0, []string{"temp"})
	}
	require.Eventually(t, func() bool { _, r := n.proc.Mode(); return !r }, 20*time.Second, 5*time.Millisecond)
	n.settle(t)
	require.Greater(t, splits, 20, "most rounds ran split")
	require.Zero(t, n.proc.mismatches.Load(), "every replayed output equal to the one in the log")
	requireReadBoth(t, tail0, file0)
	requireSameAsReference(t, n, 300)
}

// splitBatch is batch with events around the watermark: some a little
// behind it (late, or on time, by the stream's watermark and not by what
// their device's worker saw of it), and a quiet device.
func splitBatch(rng *rand.Rand, clock int64, n int) []event.Event {
	evs := batch(rng, clock, n)
	for i := range evs {
		switch rng.IntN(10) {
		case 0:
			evs[i].TS = clock - 200 - int64(rng.IntN(1200))
		case 1:
			evs[i].DeviceID = "quiet"
			evs[i].TS = clock - int64(rng.IntN(900))
		}
	}
	return evs
}
