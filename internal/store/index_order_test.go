package store

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestIndexOutOfOrderBatches: a batch indexed after one at higher offsets
// (two concurrent Appends taking the index lock in the other order) keeps
// its events findable: the runs stay sorted and disjoint, and the ranges a
// query reads cover every offset of the device.
func TestIndexOutOfOrderBatches(t *testing.T) {
	m := map[string][]run{}
	want := map[uint64]bool{}
	add := func(from, to uint64) { // one batch: every 20th offset is the device's
		for off := from; off < to; off += 20 {
			extend(m, "d", int64(off), off)
			want[off] = true
		}
	}
	add(1000, 2000) // batch B, offsets 1000–1999, indexed first
	add(0, 1000)    // batch A, offsets 0–999, indexed second
	add(2000, 3000)
	add(runSpan+5000, runSpan+6000) // beyond a run's span: a run of its own
	add(runSpan+100, runSpan+200)   // and one before it, out of order again

	runs := m["d"]
	for i := 1; i < len(runs); i++ {
		require.Less(t, runs[i-1].last, runs[i].first, "runs sorted and disjoint: %+v", runs)
	}
	got, _ := overlapping(runs, math.MinInt64, math.MaxInt64)
	covered := 0
	for off := range want {
		for _, rg := range disjoint(got, 0, math.MaxUint64) {
			if off >= rg[0] && off < rg[1] {
				covered++
				break
			}
		}
	}
	require.Equal(t, len(want), covered, "every offset of the device in a range the query reads: %+v", disjoint(got, 0, math.MaxUint64))
}
