package process

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
)

// TestReplayPendingBounded: a replay that produces 100 000 window results,
// each met in the log 10 outputs later, verifies every one it meets and holds
// a bounded number at a time (those not yet met, and at most as many matched
// ones before it compacts), not all of them until the replay ends.
func TestReplayPendingBounded(t *testing.T) {
	const n, lag = 100_000, 10
	w := &worker{p: &Processor{}, pending: map[string]int{}}
	rec := func(i int) *event.WindowRecord {
		return &event.WindowRecord{Stream: "temp", DeviceID: fmt.Sprintf("d%d", i), SizeMS: 60_000,
			Start: int64(i) * 60_000, Count: 1, Sum: float64(i)}
	}
	peak := 0
	for i := range n {
		r := rec(i)
		w.emit(r.ID(), store.Output{Window: r})
		if i >= lag {
			logged := rec(i - lag)
			w.handle(item{kind: event.TypeWindow, id: logged.ID(), raw: logged.AppendBinary(nil)})
		}
		peak = max(peak, len(w.pendOuts))
	}
	require.Equal(t, uint64(n-lag), w.p.verified.Load())
	require.Zero(t, w.p.mismatches.Load())
	require.LessOrEqual(t, peak, 2048)
	// What the log never held is still there, in the order produced, for
	// finishReplay to write.
	var left []string
	for i, key := range w.pendKeys {
		if key != "" {
			left = append(left, w.pendOuts[i].Window.DeviceID)
		}
	}
	var want []string
	for i := n - lag; i < n; i++ {
		want = append(want, fmt.Sprintf("d%d", i))
	}
	require.Equal(t, want, left)
	require.Len(t, w.pending, lag)
}
