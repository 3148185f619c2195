package store

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
)

func win(stream, dev string, size time.Duration, start time.Time, count uint64) *event.WindowRecord {
	return &event.WindowRecord{Stream: stream, DeviceID: dev, SizeMS: size.Milliseconds(), Start: start.UnixMilli(),
		Count: count, Sum: float64(count), Min: 1, Max: 1, Last: 1, LastTS: start.UnixMilli(), P50: 1, P95: 1, P99: 1}
}

func TestWindowQueriesAndLateFlags(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.s.Append(ctx, []event.Event{ev("d1", "temp", t0, 1), ev("d1", "temp", t0, 2)})
	require.NoError(t, err)
	var outs []Output
	for i := range 30 {
		start := t0.Add(time.Duration(i) * time.Minute)
		outs = append(outs,
			Output{Window: win("temp", "d1", time.Minute, start, 1)},
			Output{Window: win("temp", "", time.Minute, start, 2)},
			Output{Window: win("hum", "d1", time.Minute, start, 3)})
	}
	outs = append(outs, Output{Window: win("temp", "", time.Hour, t0, 60)},
		Output{Late: []uint64{1}}, Output{Watermark: &event.WatermarkRecord{Stream: "temp", Watermark: 5}},
		Output{Alert: &event.AlertRecord{Rule: "r", Severity: "info", Firing: true, Stream: "temp", FiredAt: 1}})
	_, err = f.s.AppendOutputs(outs)
	require.NoError(t, err)

	check := func() {
		p, err := f.s.QueryWindows(WindowQuery{Stream: "temp", Size: time.Minute, Limit: 5})
		require.NoError(t, err)
		require.Len(t, p.Windows, 5)
		for i, w := range p.Windows {
			require.Equal(t, "", w.DeviceID, "no device_id means site-wide")
			require.Equal(t, uint64(2), w.Count)
			require.Equal(t, t0.Add(time.Duration(29-i)*time.Minute).UnixMilli(), w.Start, "most recently closed first")
		}
		require.NotZero(t, p.Next)

		p, err = f.s.QueryWindows(WindowQuery{Stream: "temp", DeviceID: "d1",
			From: t0.Add(10 * time.Minute), To: t0.Add(12 * time.Minute)})
		require.NoError(t, err)
		require.Len(t, p.Windows, 2)

		p, err = f.s.QueryWindows(WindowQuery{Stream: "temp", DeviceID: "*", From: t0.Add(90 * time.Second), To: t0.Add(91 * time.Second)})
		require.NoError(t, err)
		require.Len(t, p.Windows, 3, "the 1m window of d1, the site-wide 1m and the 1h overlapping it")

		p, err = f.s.QueryWindows(WindowQuery{DeviceID: "*", Limit: MaxLimit})
		require.NoError(t, err)
		require.Len(t, p.Windows, 91)

		// EachWindow sees every match, past any limit, newest first, and stops when told.
		var starts []int64
		require.NoError(t, f.s.EachWindow(WindowQuery{Stream: "temp", Size: time.Minute, Limit: 1}, func(w StoredWindow) bool {
			starts = append(starts, w.Start)
			return true
		}))
		require.Len(t, starts, 30)
		require.Equal(t, t0.Add(29*time.Minute).UnixMilli(), starts[0])
		n := 0
		require.NoError(t, f.s.EachWindow(WindowQuery{DeviceID: "*"}, func(StoredWindow) bool { n++; return n < 7 }))
		require.Equal(t, 7, n)

		evs, err := f.s.Query(Query{DeviceID: "d1"})
		require.NoError(t, err)
		require.Len(t, evs.Events, 2)
		require.True(t, evs.Events[0].Late, "offset 1 was marked late")
		require.False(t, evs.Events[1].Late)
	}
	check()
	f.reopen(t)
	check()
}

// TestQueriesSkipUndecodableRecords is issue 11: a window result with an
// infinite sum (as binaries before the fix wrote one) made every window query
// over it fail, for every stream, across restarts. Queries skip such records
// and count them; the rest of the answer is whole.
func TestQueriesSkipUndecodableRecords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bad := win("huge", "", 5*time.Minute, t0, 3)
	bad.Sum = math.Inf(1)
	_, err := f.s.AppendOutputs([]Output{{Window: win("temp", "", time.Minute, t0, 2)}, {Window: bad},
		{Window: win("temp", "", time.Minute, t0.Add(time.Minute), 2)}})
	require.NoError(t, err)
	_, err = f.s.Append(ctx, []event.Event{ev("d1", "temp", t0, 1), ev("d1", "temp", t0, math.NaN()),
		ev("d1", "temp", t0, 3), {DeviceID: "d1", Stream: "temp", TS: t0.UnixMilli(), Value: 4, Tags: map[string]string{"a": "b"}}})
	require.NoError(t, err)
	check := func(skipped map[string]uint64) {
		p, err := f.s.QueryWindows(WindowQuery{Size: time.Minute})
		require.NoError(t, err, "a window query is not failed by one record")
		require.Len(t, p.Windows, 2)
		p, err = f.s.QueryWindows(WindowQuery{DeviceID: "*"})
		require.NoError(t, err)
		require.Len(t, p.Windows, 2)
		evs, err := f.s.Query(Query{Stream: "temp"})
		require.NoError(t, err)
		require.Equal(t, []float64{4, 3, 1}, values(evs))
		require.Equal(t, skipped, f.s.Skipped())
	}
	check(map[string]uint64{SkipNonFinite: 3, SkipCorrupt: 0})
	f.reopen(t)
	check(map[string]uint64{SkipNonFinite: 3, SkipCorrupt: 0})
}

// TestQueriesByKeyCountUndecodableRecords: a query for one stream (windows)
// or one device (events) scans only what the index lists for it. A record
// that does not decode was left out of the index, so such a query never met
// it: a stream whose window results were all written with an infinite sum
// answered nothing, and counted nothing, hiding the damage. The index lists
// what can be read of such a record, so the query meets and counts it.
func TestQueriesByKeyCountUndecodableRecords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bad := win("huge", "", 5*time.Minute, t0, 3)
	bad.Sum = math.Inf(1)
	_, err := f.s.AppendOutputs([]Output{{Window: win("temp", "", time.Minute, t0, 2)}, {Window: bad}})
	require.NoError(t, err)
	_, err = f.s.Append(ctx, []event.Event{ev("d1", "temp", t0, 1), ev("d9", "temp", t0, math.NaN())})
	require.NoError(t, err)
	check := func(skipped map[string]uint64) {
		t.Helper()
		p, err := f.s.QueryWindows(WindowQuery{Stream: "huge", DeviceID: "*"})
		require.NoError(t, err)
		require.Empty(t, p.Windows)
		evs, err := f.s.Query(Query{DeviceID: "d9"})
		require.NoError(t, err)
		require.Empty(t, evs)
		require.Equal(t, skipped, f.s.Skipped(), "the query met the record it cannot decode")
	}
	check(map[string]uint64{SkipNonFinite: 2, SkipCorrupt: 0})
	f.reopen(t)
	check(map[string]uint64{SkipNonFinite: 2, SkipCorrupt: 0})
}
