package window

import (
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// requireSane checks what every result promises whatever finite values it
// holds: finite aggregates, min ≤ p50 ≤ p95 ≤ p99 ≤ max, min ≤ mean ≤ max.
func requireSane(t *testing.T, r Result) {
	t.Helper()
	for name, v := range map[string]float64{"sum": r.Sum, "min": r.Min, "max": r.Max, "mean": r.Mean,
		"last": r.Last, "p50": r.P50, "p95": r.P95, "p99": r.P99} {
		require.False(t, math.IsInf(v, 0) || math.IsNaN(v), "%s is %v in %+v", name, v, r)
	}
	require.True(t, r.Min <= r.P50 && r.P50 <= r.P95 && r.P95 <= r.P99 && r.P99 <= r.Max,
		"min %v p50 %v p95 %v p99 %v max %v", r.Min, r.P50, r.P95, r.P99, r.Max)
	require.True(t, r.Min <= r.Mean && r.Mean <= r.Max, "mean %v outside [%v, %v]", r.Mean, r.Min, r.Max)
}

// TestQuantilesWithinMinMax: a sketch bucket's representative may lie below
// the least value of the window (4.1787 for 4.2 at 1 %); results clamp
// quantiles to [min, max], open and closed, merged from child windows or not.
func TestQuantilesWithinMinMax(t *testing.T) {
	var got []Result
	e := collect(t, Options{Sizes: []time.Duration{time.Second, 2 * time.Second}, AllowedLateness: NoLateness}, &got)
	e.Add("s", "d", 100, 4.2)
	e.Add("s", "d", 200, 4.6)
	open := e.Open("s", "*", 0, math.MinInt64, math.MaxInt64)
	require.Len(t, open, 4)
	e.Add("s", "d", 1100, 4.6)
	e.Advance("s", math.MaxInt64)
	require.Len(t, got, 6)
	for _, r := range append(open, got...) {
		requireSane(t, r)
	}
	r := got[0] // 1s window [0, 1000): 4.2 and 4.6
	require.Equal(t, int64(0), r.Start)
	require.Equal(t, 4.2, r.P50, "the exact p50 is 4.2, the least value")
}

// TestSumBeyondFloat64 is the report of issue 11: 1.7e308 twice and
// −1.7e308 once made the sum +Inf, and with it the record and every query.
func TestSumBeyondFloat64(t *testing.T) {
	var got []Result
	e := collect(t, Options{Sizes: []time.Duration{time.Second, 5 * time.Second}, AllowedLateness: NoLateness}, &got)
	e.Add("huge", "big", 100, 1.7e308)
	e.Add("huge", "big", 200, 1.7e308)
	for _, r := range e.Open("huge", "*", 0, math.MinInt64, math.MaxInt64) {
		requireSane(t, r)
		require.Equal(t, 1.7e308, r.Mean)
	}
	e.Add("huge", "big", 300, -1.7e308)
	e.Add("huge", "big", 1100, 1.7e308) // a second child of the 5s window
	e.Add("huge", "big", 1200, 1.7e308)
	e.Advance("huge", math.MaxInt64)
	require.Len(t, got, 6)
	for _, r := range got {
		requireSane(t, r)
		switch r.Size {
		case time.Second:
			if r.Start == 0 {
				require.Equal(t, 1.7e308, r.Sum, "the exact sum")
				require.False(t, r.Overflow)
				require.Equal(t, 1.7e308/3, r.Mean)
			} else {
				require.Equal(t, math.MaxFloat64, r.Sum, "saturated")
				require.True(t, r.Overflow)
				require.Equal(t, 1.7e308, r.Mean)
			}
		case 5 * time.Second:
			require.Equal(t, math.MaxFloat64, r.Sum, "saturated")
			require.True(t, r.Overflow)
			require.InEpsilon(t, 3*1.7e308/5, r.Mean, 1e-15)
		}
	}
}

// extremes are the values FuzzWindowExtremes draws from besides arbitrary
// bits: the ends of float64, values near overflow, subnormals and zeros.
var extremes = []float64{math.MaxFloat64, -math.MaxFloat64, 1.7e308, -1.7e308, 1e308, -1e308, 8.9e307, -8.9e307,
	math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64, 0x1p-1022, -0x1p-1022, 1e-310, 0, math.Copysign(0, -1),
	4.2, 4.6, -1, 1}

// FuzzWindowExtremes feeds an Engine arbitrary finite values, each from 9
// bytes: a selector (an extreme value, or the next 8 bytes as float64 bits)
// and then the event time step and device in the bits of the selector. Every
// result, open or closed, must be sane (requireSane), its record must survive
// the log codec (docs/format/records.md) with the same mean, and a checkpoint
// taken half way must restore to the same bytes and the same results.
func FuzzWindowExtremes(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 1 << 3, 0, 0, 0, 0, 0, 0, 0, 0, 2 << 3, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x81, 1, 2, 3, 4, 5, 6, 7, 0x7f, 3 << 3, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0xf0, 0x7f})
	f.Add([]byte{13 << 3, 0, 0, 0, 0, 0, 0, 0, 0, 14<<3 | 5, 0, 0, 0, 0, 0, 0, 0, 0, 7 << 3, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var results []Result
		o := Options{Sizes: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, AllowedLateness: time.Second}
		o.OnClose = func(r Result) { results = append(results, r) }
		e, err := New(o)
		require.NoError(t, err)
		var restored *Engine
		ts := int64(0)
		n := len(data) / 9
		for i := range n {
			b := data[9*i : 9*i+9]
			v := math.Float64frombits(binary.LittleEndian.Uint64(b[1:]))
			if sel := int(b[0] >> 3); sel < len(extremes) {
				v = extremes[sel]
			}
			if math.IsInf(v, 0) || math.IsNaN(v) {
				continue // ingest accepts finite values only
			}
			ts += int64(b[0]&7) * 400
			e.Add("s", []string{"a", "b"}[b[1]&1], ts-int64(b[2]&1)*1500, v)
			if i == n/2 {
				st := e.AppendStreamState(nil, "s")
				var err error
				restored, err = New(Options{Sizes: o.Sizes, AllowedLateness: o.AllowedLateness})
				require.NoError(t, err)
				_, err = restored.RestoreStream(st)
				require.NoError(t, err)
				require.Equal(t, st, restored.AppendStreamState(nil, "s"))
			}
		}
		for _, r := range e.Open("s", "*", 0, math.MinInt64, math.MaxInt64) {
			requireSane(t, r)
		}
		e.Advance("s", math.MaxInt64)
		for _, r := range results {
			requireSane(t, r)
			if r.Overflow {
				require.Equal(t, math.MaxFloat64, math.Abs(r.Sum))
			}
			requireRecordRoundTrip(t, r)
		}
		if restored != nil {
			// The restored engine missed the events after the checkpoint; it
			// must still close sanely what it holds.
			var more []Result
			restored.onClose = func(r Result) { more = append(more, r) }
			restored.Advance("s", math.MaxInt64)
			for _, r := range more {
				requireSane(t, r)
			}
		}
	})
}

// requireRecordRoundTrip stores r as the processor does and reads it back.
func requireRecordRoundTrip(t *testing.T, r Result) {
	t.Helper()
	rec := event.WindowRecord{Stream: r.Stream, DeviceID: r.DeviceID, SizeMS: r.Size.Milliseconds(), Start: r.Start,
		Count: r.Count, Sum: r.Sum, Min: r.Min, Max: r.Max, Last: r.Last, LastTS: r.LastTS, P50: r.P50, P95: r.P95, P99: r.P99}
	if r.Overflow {
		rec.Overflow, rec.OverflowMean = true, r.Mean
	}
	var err error
	rec.Sketch, err = r.Sketch.MarshalBinary()
	require.NoError(t, err)
	got, err := event.DecodeWindow(rec.AppendBinary(nil))
	require.NoError(t, err, "%+v", r)
	require.Equal(t, rec, got)
	require.Equal(t, r.Mean, got.Mean())
}
