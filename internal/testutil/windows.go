package testutil

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Windows as tests check them: GET /v1/windows's elements, and the same
// windows recomputed by brute force from the stored events.

// WindowJSON is one element of GET /v1/windows.
type WindowJSON struct {
	ID       string  `json:"id"`
	Stream   string  `json:"stream"`
	DeviceID string  `json:"device_id"`
	Size     string  `json:"size"`
	Start    string  `json:"start"`
	Count    uint64  `json:"count"`
	Sum      float64 `json:"sum"`
	Overflow bool    `json:"overflow"`
	Min      float64 `json:"min"`
	Max      float64 `json:"max"`
	Mean     float64 `json:"mean"`
	Last     float64 `json:"last"`
	P50      float64 `json:"p50"`
	P95      float64 `json:"p95"`
	P99      float64 `json:"p99"`
	Final    bool    `json:"final"`
}

// RawEvent is a stored event as GET /v1/events gives it.
type RawEvent struct {
	Offset   uint64  `json:"offset"`
	ID       string  `json:"id"`
	DeviceID string  `json:"device_id"`
	Stream   string  `json:"stream"`
	TS       string  `json:"ts"`
	Value    float64 `json:"value"`
	Late     bool    `json:"late"`
}

// Recomputed is a window as a batch recompute gives it.
type Recomputed struct {
	count         uint64
	sum, min, max float64
	last          float64
	lastTS        int64
	values        []float64
}

// Quantile is the exact q-quantile of the window's values.
func (r *Recomputed) Quantile(q float64) float64 {
	v := slices.Clone(r.values)
	sort.Float64s(v)
	return v[int(q*float64(len(v)-1))]
}

// RecomputeWindows applies holdfast's window rule to the stored events in log
// order, naively: per stream the watermark is the highest event time seen
// minus the lateness; an event whose window has ended at or before the
// watermark is late for that size; a window closes once the watermark reaches
// its end. It returns the closed windows by id.
func RecomputeWindows(t testing.TB, events []RawEvent, sizes []time.Duration, lateness time.Duration) map[string]*Recomputed {
	t.Helper()
	sort.Slice(events, func(i, j int) bool { return events[i].Offset < events[j].Offset })
	open := map[string]*Recomputed{}
	ends := map[string]int64{}
	closed := map[string]*Recomputed{}
	maxTS := map[string]int64{}
	wm := map[string]int64{}
	for _, e := range events {
		tt, err := time.Parse(time.RFC3339Nano, e.TS)
		require.NoError(t, err)
		ts := tt.UnixMilli()
		w, seen := wm[e.Stream]
		for _, size := range sizes {
			sz := size.Milliseconds()
			start := ts - ((ts%sz)+sz)%sz
			if seen && start+sz <= w {
				continue // late for this size
			}
			for _, dev := range []string{e.DeviceID, "*"} {
				id := fmt.Sprintf("%s/%s/%d/%d", e.Stream, dev, sz, start)
				r := open[id]
				if r == nil {
					r = &Recomputed{min: math.Inf(1), max: math.Inf(-1), lastTS: math.MinInt64}
					open[id] = r
					ends[id] = start + sz
				}
				r.count++
				r.sum += e.Value
				r.min, r.max = math.Min(r.min, e.Value), math.Max(r.max, e.Value)
				if ts >= r.lastTS {
					r.last, r.lastTS = e.Value, ts
				}
				r.values = append(r.values, e.Value)
			}
		}
		if !seen || ts > maxTS[e.Stream] {
			maxTS[e.Stream] = ts
		}
		if nw := maxTS[e.Stream] - lateness.Milliseconds(); !seen || nw > w {
			wm[e.Stream] = nw
		}
		for id, end := range ends {
			if streamOf(id) == e.Stream && end <= wm[e.Stream] {
				closed[id] = open[id]
				delete(open, id)
				delete(ends, id)
			}
		}
	}
	return closed
}

func streamOf(id string) string {
	for i := range id {
		if id[i] == '/' {
			return id[:i]
		}
	}
	return id
}

// RequireWindowsEqual checks the closed windows a node wrote (got) against
// the recompute (want): each written once, the same windows, each with the same count, sum,
// min, max, last and mean, and quantiles within the sketch's 1 %.
func RequireWindowsEqual(t testing.TB, want map[string]*Recomputed, got []WindowJSON) {
	t.Helper()
	written := map[string]int{}
	for _, w := range got {
		written[w.ID]++
	}
	for id, n := range written {
		require.Equal(t, 1, n, "window %s written %d times", id, n)
	}
	require.Equal(t, len(want), len(got), "closed windows: recompute has %d, the log has %d", len(want), len(got))
	for _, w := range got {
		r, ok := want[w.ID]
		require.True(t, ok, "window %s in the log but not in the recompute", w.ID)
		require.Equal(t, r.count, w.Count, w.ID)
		require.Equal(t, r.sum, w.Sum, w.ID)
		require.Equal(t, r.min, w.Min, w.ID)
		require.Equal(t, r.max, w.Max, w.ID)
		require.Equal(t, r.last, w.Last, w.ID)
		require.InDelta(t, r.sum/float64(r.count), w.Mean, 1e-9, w.ID)
		for q, got := range map[float64]float64{0.5: w.P50, 0.95: w.P95, 0.99: w.P99} {
			exact := r.Quantile(q)
			require.LessOrEqual(t, math.Abs(got-exact), 0.01*math.Abs(exact)+1e-9, "%s p%v: got %v, exact %v", w.ID, q*100, got, exact)
		}
	}
}

// MergeRecomputed merges the windows of two nodes by id, as an active-active
// pair's site-wide answer does: counts, sums and values add up, min and max
// of both, last the value with the later event time (the larger value on a
// tie). a and b are not changed.
func MergeRecomputed(a, b map[string]*Recomputed) map[string]*Recomputed {
	out := map[string]*Recomputed{}
	for _, m := range []map[string]*Recomputed{a, b} {
		for id, r := range m {
			o := out[id]
			if o == nil {
				c := *r
				c.values = slices.Clone(r.values)
				out[id] = &c
				continue
			}
			o.count += r.count
			o.sum += r.sum
			o.min, o.max = math.Min(o.min, r.min), math.Max(o.max, r.max)
			if r.lastTS > o.lastTS || (r.lastTS == o.lastTS && r.last > o.last) {
				o.last, o.lastTS = r.last, r.lastTS
			}
			o.values = append(o.values, r.values...)
		}
	}
	return out
}

// FinalWindows pages through GET /v1/windows?device_id=* on the node at
// base (http://host:port) and returns its final windows.
func FinalWindows(t testing.TB, base string) []WindowJSON {
	t.Helper()
	var out []WindowJSON
	cursor := ""
	for {
		u := base + "/v1/windows?device_id=*&limit=10000"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		resp, err := http.Get(u)
		require.NoError(t, err)
		var page struct {
			Windows []WindowJSON `json:"windows"`
			Next    string       `json:"next"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
		resp.Body.Close()
		for _, w := range page.Windows {
			if w.Final {
				out = append(out, w)
			}
		}
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
}
