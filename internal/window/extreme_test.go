package window

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
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
