package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// TestReceivedNeverGoesBackwards: after the wall clock jumps an hour back,
// received times hold at the last one stamped, in this run and the next;
// after it jumps forward they follow it.
func TestReceivedNeverGoesBackwards(t *testing.T) {
	f := newFixture(t)
	add := func(v float64) {
		_, err := f.s.Append(context.Background(), []event.Event{ev("d", "s", t0, v)})
		require.NoError(t, err)
	}
	add(1)
	f.now = f.now.Add(time.Second)
	add(2)
	f.now = f.now.Add(-time.Hour)
	add(3)
	f.reopen(t) // a restart while the clock is still an hour behind
	f.now = f.now.Add(time.Second)
	add(4)
	f.now = f.now.Add(2 * time.Hour)
	add(5)

	p, err := f.s.Query(Query{DeviceID: "d", Limit: 10})
	require.NoError(t, err)
	require.Len(t, p.Events, 5)
	byValue := map[float64]int64{}
	for _, e := range p.Events {
		byValue[e.Value] = e.Received
	}
	got := []int64{byValue[1], byValue[2], byValue[3], byValue[4], byValue[5]}
	require.True(t, slices.IsSorted(got), "received times went backwards: %v", got)
	held := t0.Add(time.Second).UnixMilli()
	require.Equal(t, []int64{t0.UnixMilli(), held, held, held, t0.Add(time.Hour + 2*time.Second).UnixMilli()}, got)
}
