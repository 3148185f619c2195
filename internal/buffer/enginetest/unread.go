package enginetest

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	prom "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// UnreadDeleted checks an engine's retention hook: retention deleting records
// a reader cursor has not passed calls Options.OnUnreadDeleted with exactly
// those offsets and their payloads, a value cursor (buffer.ValuePrefix) does
// not hold records back, and the retention metrics count what the hook got.
// open opens the engine with o; base carries engine-specific options (the
// test sets Dir, MaxBytes, Metrics and the hook).
func UnreadDeleted(t *testing.T, base buffer.Options, open func(o buffer.Options) (buffer.Engine, error)) {
	var mu sync.Mutex
	got := map[uint64]string{}
	calls := 0
	m := buffer.NewMetrics(nil)
	o := base
	o.Dir, o.MaxBytes, o.Metrics = t.TempDir(), 16<<10, m
	o.OnUnreadDeleted = func(from, to uint64, r buffer.RecordReader) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		want := from
		for {
			off, p, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			require.Equal(t, want, off)
			got[off] = string(p)
			want++
		}
		require.Equal(t, to, want, "the reader ends at to")
	}
	l, err := open(o)
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.CommitCursors(map[string]uint64{"sync:x": 100, buffer.ValuePrefix + "sync:x:seq": 0}))
	record := func(i uint64) string { return fmt.Sprintf("record-%04d-%s", i, strings.Repeat("x", 40)) }
	for i := range uint64(1000) {
		_, err := l.Append([]byte(record(i)))
		require.NoError(t, err)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Positive(t, calls)
	require.NotContains(t, got, uint64(99), "read records are not reported")
	first := l.FirstOffset()
	require.Greater(t, first, uint64(100))
	for off := uint64(100); off < first; off++ {
		require.Equal(t, record(off), got[off], "offset %d", off)
	}
	require.Len(t, got, int(first-100))
	require.Equal(t, float64(first), prom.ToFloat64(m.RetentionRecords))
	require.Equal(t, float64(len(got)), prom.ToFloat64(m.RetentionUnread), "the metric counts what the hook got")
}

// RetentionWaitsForRemove checks that retention leaves the records a Remove
// has hidden alone until the Remove is done: a record hidden and then shown
// again (confirm did not choose it) is reported to OnUnreadDeleted when
// retention does delete it, so none goes unreported. open opens the engine
// with o; base carries engine-specific options.
func RetentionWaitsForRemove(t *testing.T, base buffer.Options, open func(o buffer.Options) (buffer.Engine, error)) {
	var mu sync.Mutex
	reported := map[uint64]int{}
	o := base
	o.Dir, o.MaxBytes = t.TempDir(), 64<<10
	o.OnUnreadDeleted = func(from, to uint64, r buffer.RecordReader) {
		mu.Lock()
		defer mu.Unlock()
		for {
			off, _, err := r.Next()
			if err != nil {
				return
			}
			reported[off]++
		}
	}
	l, err := open(o)
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.CommitCursor("sync:x", 0))
	fill := func(n int) {
		for range n {
			_, err := l.Append(make([]byte, 100))
			require.NoError(t, err)
		}
	}
	fill(400) // below 64 KiB with any engine's overhead
	// Retention reaching a hidden record would wait for the Remove, whose
	// confirm waits for the append that runs retention: a hang, not a pass.
	bounded(t, "Remove with appends in confirm", func() {
		_, err = asRemover(t, l).Remove([]uint64{1, 2, 3}, func([]uint64) []uint64 {
			fill(300) // retention wants the first records now; it must wait
			require.LessOrEqual(t, l.FirstOffset(), uint64(1), "retention waits for the Remove")
			return nil
		})
	})
	require.NoError(t, err)
	fill(100) // commits after the Remove: retention catches up
	first := l.FirstOffset()
	require.Greater(t, first, uint64(3))
	mu.Lock()
	defer mu.Unlock()
	for off := range first {
		require.Equal(t, 1, reported[off], "offset %d reported once as deleted unread", off)
	}
}
