package window

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, Options{}.Validate(), "zero options take the defaults")
	require.NoError(t, Options{AllowedLateness: NoLateness}.Validate())
	require.NoError(t, Options{Sizes: []time.Duration{time.Second, 1500 * time.Millisecond}, Accuracy: MaxAccuracy}.Validate())

	cases := map[string]struct {
		o    Options
		want []string
	}{
		"size too small":      {Options{Sizes: []time.Duration{500 * time.Millisecond}}, []string{"window: size 500ms is below the minimum of 1s"}},
		"size not whole ms":   {Options{Sizes: []time.Duration{time.Second + time.Microsecond}}, []string{"window: size 1.000001s is not a whole number of milliseconds"}},
		"duplicate size":      {Options{Sizes: []time.Duration{time.Minute, time.Hour, time.Minute}}, []string{"window: size 1m0s is given twice"}},
		"too many sizes":      {Options{Sizes: manySizes(17)}, []string{"window: 17 sizes are more than the maximum of 16"}},
		"negative lateness":   {Options{AllowedLateness: -time.Second}, []string{"window: allowed lateness -1s is negative (NoLateness asks for none)"}},
		"lateness not whole":  {Options{AllowedLateness: 1500 * time.Microsecond}, []string{"window: allowed lateness 1.5ms is not a whole number of milliseconds"}},
		"accuracy too fine":   {Options{Accuracy: 0.0001}, []string{"window: accuracy 0.0001 is outside [0.001, 0.5]"}},
		"accuracy too coarse": {Options{Accuracy: 0.9}, []string{"window: accuracy 0.9 is outside [0.001, 0.5]"}},
		"accuracy NaN":        {Options{Accuracy: math.NaN()}, []string{"window: accuracy NaN is outside [0.001, 0.5]"}},
		"every problem at once": {
			Options{Sizes: []time.Duration{0, time.Second, time.Second}, AllowedLateness: -2, Accuracy: -1},
			[]string{
				"window: allowed lateness -2ns is negative (NoLateness asks for none)",
				"window: size 0s is below the minimum of 1s",
				"window: size 1s is given twice",
				"window: accuracy -1 is outside [0.001, 0.5]",
			},
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.o.Validate()
			require.EqualError(t, err, strings.Join(c.want, "\n"))
			_, err = New(c.o)
			require.EqualError(t, err, strings.Join(c.want, "\n"), "New validates")
		})
	}
}

func manySizes(n int) []time.Duration {
	d := make([]time.Duration, n)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Second
	}
	return d
}

func TestDefaults(t *testing.T) {
	e, err := New(Options{})
	require.NoError(t, err)
	require.Equal(t, []time.Duration{time.Minute, 5 * time.Minute, time.Hour}, e.durs)
	require.Equal(t, int64(30_000), e.lateness)
	require.Equal(t, DefaultAccuracy, e.m.accuracy)
	require.Equal(t, []int{-1, 0, 1}, e.child, "1m feeds 5m feeds 1h")

	e, err = New(Options{Sizes: []time.Duration{time.Hour, time.Second}, AllowedLateness: NoLateness})
	require.NoError(t, err)
	require.Equal(t, []time.Duration{time.Second, time.Hour}, e.durs, "sizes are sorted")
	require.Zero(t, e.lateness)
}

// collect returns an Engine whose closed windows land in *out.
func collect(t *testing.T, o Options, out *[]Result) *Engine {
	t.Helper()
	o.OnClose = func(r Result) { *out = append(*out, r) }
	e, err := New(o)
	require.NoError(t, err)
	return e
}

type closed struct {
	End    int64
	Size   time.Duration
	Device string
	Start  int64
	Count  uint64
}

func summarize(rs []Result) []closed {
	out := make([]closed, len(rs))
	for i, r := range rs {
		out[i] = closed{r.End, r.Size, r.DeviceID, r.Start, r.Count}
		if !r.Final {
			panic("OnClose got a partial result")
		}
	}
	return out
}

// TestCloseOrder closes many windows in one call and checks the documented
// order: end, size, device id ("" first), start.
func TestCloseOrder(t *testing.T) {
	var got []Result
	e := collect(t, Options{Sizes: []time.Duration{3 * time.Second, time.Second, 2 * time.Second}, AllowedLateness: 10 * time.Second}, &got)
	e.Add("s", "b", 500, 1)
	e.Add("s", "a", 5500, 2)
	e.Add("s", "b", 5999, 3)
	require.Empty(t, got)
	e.Advance("s", 6000)
	s := time.Second
	require.Equal(t, []closed{
		{1000, s, "", 0, 1}, {1000, s, "b", 0, 1},
		{2000, 2 * s, "", 0, 1}, {2000, 2 * s, "b", 0, 1},
		{3000, 3 * s, "", 0, 1}, {3000, 3 * s, "b", 0, 1},
		{6000, s, "", 5000, 2}, {6000, s, "a", 5000, 1}, {6000, s, "b", 5000, 1},
		{6000, 2 * s, "", 4000, 2}, {6000, 2 * s, "a", 4000, 1}, {6000, 2 * s, "b", 4000, 1},
		{6000, 3 * s, "", 3000, 2}, {6000, 3 * s, "a", 3000, 1}, {6000, 3 * s, "b", 3000, 1},
	}, summarize(got))
	require.Zero(t, e.OpenWindows())
}

func TestAdvanceAndWatermark(t *testing.T) {
	var got []Result
	e := collect(t, Options{Sizes: []time.Duration{time.Minute}}, &got)
	_, ok := e.Watermark("s")
	require.False(t, ok, "no watermark before the first event")

	require.False(t, e.Add("s", "d", 10_000, 4))
	w, ok := e.Watermark("s")
	require.True(t, ok)
	require.Equal(t, int64(10_000-30_000), w, "highest event time minus the lateness")
	require.Equal(t, 2, e.OpenWindows(), "the device's window and the site's")

	e.Advance("s", 59_999)
	require.Empty(t, got)
	e.Advance("s", 60_000)
	require.Equal(t, []closed{{60_000, time.Minute, "", 0, 1}, {60_000, time.Minute, "d", 0, 1}}, summarize(got))
	require.Equal(t, 4.0, got[1].Last)
	require.Equal(t, int64(10_000), got[1].LastTS)

	e.Advance("s", 1_000)
	w, _ = e.Watermark("s")
	require.Equal(t, int64(60_000), w, "the watermark never goes back")

	require.True(t, e.Add("s", "d", 59_000, 1), "its window has closed")
	require.Equal(t, uint64(1), e.Late("s"))
	require.Zero(t, e.OpenWindows(), "a late event opens nothing")

	require.False(t, e.Add("s", "d", 61_000, 1))
	w, _ = e.Watermark("s")
	require.Equal(t, int64(60_000), w, "61s − 30s is below the advanced watermark")

	e.Advance("quiet", 5)
	w, ok = e.Watermark("quiet")
	require.True(t, ok)
	require.Equal(t, int64(5), w)
	require.True(t, e.Add("quiet", "d", -60_000, 1), "Advance alone makes later events late")
	require.Zero(t, e.Late("nope"))
}

func TestEarliestEnd(t *testing.T) {
	e, err := New(Options{Sizes: []time.Duration{time.Minute, 5 * time.Minute}, AllowedLateness: time.Minute})
	require.NoError(t, err)
	_, ok := e.EarliestEnd("s")
	require.False(t, ok)
	e.Add("s", "d", 130_000, 1) // still pending: not applied to a window yet
	end, ok := e.EarliestEnd("s")
	require.True(t, ok)
	require.Equal(t, int64(180_000), end)
	e.Add("s", "d", 170_000, 1)
	require.Equal(t, 4, e.OpenWindows())
	require.False(t, e.Add("s", "d", 119_000, 1), "W is 110s") // pending again
	end, _ = e.EarliestEnd("s")
	require.Equal(t, int64(120_000), end)
	e.Advance("s", 120_000)
	end, _ = e.EarliestEnd("s")
	require.Equal(t, int64(180_000), end)
	e.Advance("s", 300_000)
	_, ok = e.EarliestEnd("s")
	require.False(t, ok)
}

// TestLateForSomeSizes: an event behind the watermark for its 1-minute
// window still counts in its open 5-minute window.
func TestLateForSomeSizes(t *testing.T) {
	var got []Result
	e := collect(t, Options{Sizes: []time.Duration{time.Minute, 5 * time.Minute}, AllowedLateness: NoLateness}, &got)
	require.False(t, e.Add("s", "d", 10_000, 1))
	require.False(t, e.Add("s", "d", 70_000, 2))
	require.Equal(t, []closed{{60_000, time.Minute, "", 0, 1}, {60_000, time.Minute, "d", 0, 1}}, summarize(got))
	got = got[:0]

	require.True(t, e.Add("s", "d", 30_000, 8), "late for 1m, not for 5m")
	require.Equal(t, uint64(1), e.Late("s"))
	open := e.Open("s", "d", 5*time.Minute, math.MinInt64, math.MaxInt64)
	require.Len(t, open, 1)
	require.Equal(t, uint64(3), open[0].Count)
	require.Equal(t, 11.0, open[0].Sum)
	require.False(t, open[0].Final)
	require.Equal(t, 2.0, open[0].Last, "the latest event time, not the latest call")

	e.Advance("s", 300_000)
	require.Equal(t, []closed{
		{120_000, time.Minute, "", 60_000, 1}, {120_000, time.Minute, "d", 60_000, 1},
		{300_000, 5 * time.Minute, "", 0, 3}, {300_000, 5 * time.Minute, "d", 0, 3},
	}, summarize(got))
	r := got[3]
	require.Equal(t, 1.0, r.Min)
	require.Equal(t, 8.0, r.Max)
	require.Equal(t, 11.0/3, r.Mean)
	require.Equal(t, 2.0, r.Last)
	require.Equal(t, int64(70_000), r.LastTS)
}

func TestLastTies(t *testing.T) {
	var got []Result
	e := collect(t, Options{Sizes: []time.Duration{time.Second, 2 * time.Second}, AllowedLateness: 5 * time.Second}, &got)
	e.Add("s", "d", 1500, 1)
	e.Add("s", "d", 1500, 2) // same time, added later: wins
	e.Add("s", "d", 1200, 3)
	e.Add("s", "d", 500, 4)
	e.Advance("s", 2000)
	for _, r := range got {
		if r.End == 2000 {
			require.Equal(t, 2.0, r.Last, "%v %q", r.Size, r.DeviceID)
			require.Equal(t, int64(1500), r.LastTS)
		}
	}
	require.Len(t, got, 6)
}

func TestOpenFilters(t *testing.T) {
	e, err := New(Options{Sizes: []time.Duration{time.Minute, 5 * time.Minute}})
	require.NoError(t, err)
	require.Nil(t, e.Open("none", "*", 0, math.MinInt64, math.MaxInt64))
	e.Add("s", "a", 10_000, 1)
	e.Add("s", "b", 70_000, 2)
	e.Add("s", "b", 75_000, 3)
	e.Add("t", "a", 10_000, 100)

	type row struct {
		Device string
		Size   time.Duration
		Start  int64
		Count  uint64
	}
	rows := func(rs []Result) []row {
		out := []row{}
		for _, r := range rs {
			require.False(t, r.Final)
			require.Equal(t, "s", r.Stream)
			out = append(out, row{r.DeviceID, r.Size, r.Start, r.Count})
		}
		return out
	}
	all, none := int64(math.MinInt64), int64(math.MaxInt64)
	require.Equal(t, []row{
		{"", time.Minute, 0, 1}, {"a", time.Minute, 0, 1},
		{"", time.Minute, 60_000, 2}, {"b", time.Minute, 60_000, 2},
		{"", 5 * time.Minute, 0, 3}, {"a", 5 * time.Minute, 0, 1}, {"b", 5 * time.Minute, 0, 2},
	}, rows(e.Open("s", "*", 0, all, none)))
	require.Equal(t, []row{{"", time.Minute, 0, 1}, {"", time.Minute, 60_000, 2}, {"", 5 * time.Minute, 0, 3}},
		rows(e.Open("s", "", 0, all, none)))
	require.Equal(t, []row{{"b", time.Minute, 60_000, 2}}, rows(e.Open("s", "b", time.Minute, all, none)))
	require.Equal(t, []row{{"", time.Minute, 60_000, 2}, {"b", time.Minute, 60_000, 2}, {"", 5 * time.Minute, 0, 3}, {"a", 5 * time.Minute, 0, 1}, {"b", 5 * time.Minute, 0, 2}},
		rows(e.Open("s", "*", 0, 60_000, 60_001)), "overlapping [60s, 60.001s)")
	require.Empty(t, rows(e.Open("s", "*", time.Minute, 120_000, 200_000)))
	require.Empty(t, rows(e.Open("s", "*", 2*time.Minute, all, none)), "a size the Engine does not have")
	require.Empty(t, rows(e.Open("s", "c", 0, all, none)))

	// A partial's sketch is a copy.
	p := e.Open("s", "", 5*time.Minute, all, none)[0]
	p.Sketch.Add(1e9)
	require.Equal(t, uint64(3), e.Open("s", "", 5*time.Minute, all, none)[0].Sketch.Count())
}

func TestSiteOnlyEvents(t *testing.T) {
	var got []Result
	e := collect(t, Options{Sizes: []time.Duration{time.Minute}}, &got)
	e.Add("s", "", 1_000, 5)
	e.Add("s", "d", 2_000, 7)
	e.Advance("s", math.MaxInt64)
	require.Equal(t, []closed{{60_000, time.Minute, "", 0, 2}, {60_000, time.Minute, "d", 0, 1}}, summarize(got),
		"an empty device id counts once, site-wide")
}

func TestOutOfRangeTimestamps(t *testing.T) {
	e, err := New(Options{})
	require.NoError(t, err)
	require.True(t, e.Add("s", "d", MaxTime+1, 1))
	require.True(t, e.Add("s", "d", math.MinInt64, 1))
	require.Equal(t, uint64(2), e.Late("s"))
	require.Zero(t, e.OpenWindows())
	_, ok := e.Watermark("s")
	require.False(t, ok, "they do not move the watermark")
	require.False(t, e.Add("s", "d", MaxTime, 1))
	require.False(t, e.Add("t", "d", MinTime, 1))
	require.Equal(t, 12, e.OpenWindows(), "3 sizes × (device, site) × 2 streams")
	e.Advance("s", math.MaxInt64)
	e.Advance("t", math.MaxInt64)
	require.Zero(t, e.OpenWindows())
}

func TestOnCloseReentry(t *testing.T) {
	var e *Engine
	var opened []Result
	add := false
	e, err := New(Options{Sizes: []time.Duration{time.Second}, AllowedLateness: NoLateness, OnClose: func(r Result) {
		opened = e.Open("s", "*", 0, math.MinInt64, math.MaxInt64) // reading is fine
		if add {
			e.Add("s", "d", 5_000, 1)
		}
	}})
	require.NoError(t, err)
	e.Add("s", "d", 100, 1)
	e.Add("s", "x", 1_500, 1)
	require.Len(t, opened, 2, "the window of x, site and device")
	add = true
	require.PanicsWithValue(t, "window: Add or Advance called from OnClose", func() { e.Advance("s", 2_000) })
}

// TestDeterminism runs the same random calls through two Engines: the
// OnClose sequences must be identical, sketches included.
func TestDeterminism(t *testing.T) {
	type record struct {
		r      Result // Sketch nil
		sketch []byte
	}
	run := func() []record {
		var out []record
		e, err := New(Options{Sizes: []time.Duration{time.Second, 4 * time.Second, 6 * time.Second}, AllowedLateness: 2 * time.Second,
			OnClose: func(r Result) {
				b, _ := r.Sketch.MarshalBinary()
				r.Sketch = nil
				out = append(out, record{r, b})
			}})
		require.NoError(t, err)
		rng := rand.New(rand.NewPCG(21, 21))
		ts := int64(0)
		for range 10_000 {
			ts += rng.Int64N(200)
			stream := fmt.Sprint("s", rng.IntN(3))
			if rng.IntN(50) == 0 {
				e.Advance(stream, ts-rng.Int64N(3000))
				continue
			}
			e.Add(stream, fmt.Sprint("d", rng.IntN(300)), ts-rng.Int64N(4000), rng.NormFloat64()*1000)
		}
		for i := range 3 {
			e.Advance(fmt.Sprint("s", i), math.MaxInt64)
		}
		return out
	}
	a, b := run(), run()
	require.Greater(t, len(a), 5_000)
	require.Equal(t, a, b)
}

// TestKeyTable drives the key table with random puts and removes, small
// enough for long probe clusters, against a map.
func TestKeyTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 31))
	tab := newKeyTable()
	want := map[string]*key{}
	names := make([]string, 200)
	for i := range names {
		names[i] = fmt.Sprintf("device-%d", i)
	}
	for op := range 50_000 {
		name := names[rng.IntN(len(names))]
		if k := want[name]; k != nil && rng.IntN(2) == 0 {
			tab.remove(k)
			delete(want, name)
		} else if k == nil {
			k := &key{device: name}
			tab.put(k)
			want[name] = k
		}
		if op%97 == 0 {
			require.Equal(t, len(want), tab.n)
			for _, n := range names {
				require.Same(t, want[n], tab.get(n), "op %d %s", op, n)
			}
			seen := 0
			tab.all(func(k *key) { require.Same(t, want[k.device], k); seen++ })
			require.Equal(t, len(want), seen)
			require.LessOrEqual(t, 2*tab.n, len(tab.slots), "at most half full")
		}
		if op == 40_000 { // drain: the table shrinks back
			for n, k := range want {
				tab.remove(k)
				delete(want, n)
			}
			require.Equal(t, minKeySlots, len(tab.slots))
		}
	}
}
