package window

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// model is a brute-force reference for Engine: every window keeps the list of
// its events, and the watermark rule is applied naively in call order.
type model struct {
	sizes    []time.Duration // ascending
	lateness int64
	streams  map[string]*modelStream
}

type modelStream struct {
	w     int64
	hasW  bool
	maxTS int64
	seen  bool
	late  uint64
	open  map[modelKey]*modelWindow
}

type modelKey struct {
	device string
	size   time.Duration
	start  int64
}

type modelEvent struct {
	ts int64
	v  float64
}

type modelWindow struct {
	modelKey
	events []modelEvent // in the order added
}

func newModel(sizes []time.Duration, lateness time.Duration) *model {
	return &model{sizes: slices.Sorted(slices.Values(sizes)), lateness: lateness.Milliseconds(), streams: map[string]*modelStream{}}
}

func (m *model) stream(name string) *modelStream {
	s := m.streams[name]
	if s == nil {
		s = &modelStream{w: math.MinInt64, open: map[modelKey]*modelWindow{}}
		m.streams[name] = s
	}
	return s
}

// add returns whether the event was late and the windows it closed, in order.
func (m *model) add(stream, device string, ts int64, v float64) (bool, []*modelWindow) {
	s := m.stream(stream)
	if ts < MinTime || ts > MaxTime {
		s.late++
		return true, nil
	}
	late := false
	for _, d := range m.sizes {
		size := d.Milliseconds()
		start := ts - ((ts%size)+size)%size
		if start+size <= s.w {
			late = true
			continue
		}
		devices := []string{"", device}
		if device == "" {
			devices = devices[:1]
		}
		for _, dev := range devices {
			k := modelKey{dev, d, start}
			win := s.open[k]
			if win == nil {
				win = &modelWindow{modelKey: k}
				s.open[k] = win
			}
			win.events = append(win.events, modelEvent{ts, v})
		}
	}
	if late {
		s.late++
	}
	var closed []*modelWindow
	if !s.seen || ts > s.maxTS {
		s.maxTS, s.seen = ts, true
		if w := ts - m.lateness; w > s.w || !s.hasW {
			closed = m.raise(s, w)
		}
	}
	return late, closed
}

func (m *model) advance(stream string, w int64) []*modelWindow {
	s := m.stream(stream)
	if w > s.w || !s.hasW {
		return m.raise(s, w)
	}
	return nil
}

func (m *model) raise(s *modelStream, w int64) []*modelWindow {
	s.w, s.hasW = w, true
	var closed []*modelWindow
	for k, win := range s.open {
		if k.start+k.size.Milliseconds() <= w {
			closed = append(closed, win)
			delete(s.open, k)
		}
	}
	sortModel(closed)
	return closed
}

func sortModel(ws []*modelWindow) {
	slices.SortFunc(ws, func(a, b *modelWindow) int {
		return cmp.Or(
			cmp.Compare(a.start+a.size.Milliseconds(), b.start+b.size.Milliseconds()),
			cmp.Compare(a.size, b.size),
			strings.Compare(a.device, b.device),
			cmp.Compare(a.start, b.start),
		)
	})
}

// openWindows returns the stream's open windows matching an Engine.Open filter.
func (m *model) openWindows(stream, device string, size time.Duration, from, to int64) []*modelWindow {
	s := m.streams[stream]
	if s == nil {
		return nil
	}
	var out []*modelWindow
	for k, win := range s.open {
		if (device == "*" || device == k.device) && (size == 0 || size == k.size) &&
			k.start < to && k.start+k.size.Milliseconds() > from {
			out = append(out, win)
		}
	}
	sortModel(out)
	return out
}

func (m *model) openCount() int {
	n := 0
	for _, s := range m.streams {
		n += len(s.open)
	}
	return n
}

// checkResult compares r with the model window: aggregates exactly (the test
// values make every sum exact), quantiles within the sketch's guarantee.
// It does not call t.Helper, which costs a stack walk per result.
func checkResult(t *testing.T, accuracy float64, stream string, want *modelWindow, r Result, final bool) {
	n := len(want.events)
	exp := Result{
		Stream:   stream,
		DeviceID: want.device,
		Size:     want.size,
		Start:    want.start,
		End:      want.start + want.size.Milliseconds(),
		Count:    uint64(n),
		Min:      math.Inf(1),
		Max:      math.Inf(-1),
		LastTS:   math.MinInt64,
		Final:    final,
	}
	vals := make([]float64, 0, n)
	for _, e := range want.events {
		exp.Sum += e.v
		exp.Min, exp.Max = min(exp.Min, e.v), max(exp.Max, e.v)
		if e.ts >= exp.LastTS {
			exp.Last, exp.LastTS = e.v, e.ts
		}
		vals = append(vals, e.v)
	}
	exp.Mean = exp.Sum / float64(n)
	got := r
	got.P50, got.P95, got.P99, got.Sketch = 0, 0, 0, nil
	if got != exp {
		t.Fatalf("result differs from the model\n got %+v\nwant %+v", got, exp)
	}
	if r.Sketch == nil || r.Sketch.Count() != uint64(n) {
		t.Fatalf("%+v: sketch missing or with the wrong count", got)
	}
	slices.Sort(vals)
	for _, c := range []struct {
		q   float64
		got float64
	}{{0.5, r.P50}, {0.95, r.P95}, {0.99, r.P99}, {0, r.Sketch.Quantile(0)}, {1, r.Sketch.Quantile(1)}, {0.25, r.Sketch.Quantile(0.25)}} {
		x := vals[int(c.q*float64(n-1))]
		requireWithin(t, accuracy, x, c.got, "%+v q=%v", got, c.q)
	}
}

// requireWithin checks the Sketch guarantee: |got − x| ≤ a·|x|, up to rounding.
func requireWithin(t *testing.T, a, x, got float64, format string, args ...any) {
	if math.Abs(x) < MinIndexable {
		if got != 0 {
			t.Fatalf("%s: exact %v is in the zero bucket, got %v", fmt.Sprintf(format, args...), x, got)
		}
		return
	}
	if err := math.Abs(got - x); !(err <= a*math.Abs(x)*(1+1e-9)) {
		t.Fatalf("%s: quantile outside the guarantee: exact %v, got %v, relative error %v > %v",
			fmt.Sprintf(format, args...), x, got, err/math.Abs(x), a)
	}
}

// scenario is one randomized run's shape.
type scenario struct {
	sizes    []time.Duration
	lateness time.Duration // as Options takes it (NoLateness for zero)
	accuracy float64
	streams  int
	devices  int
	calls    int
}

func randomScenario(rng *rand.Rand) scenario {
	sizeSets := [][]time.Duration{
		{time.Second, 5 * time.Second, time.Minute},
		{time.Second, 2 * time.Second, 3 * time.Second, 6 * time.Second}, // 6s: child 3s; 2s and 3s share 1s
		{2 * time.Second, 5 * time.Second, 10 * time.Second},             // 2s and 5s are both leaves
		{time.Second},
		{1500 * time.Millisecond, 4500 * time.Millisecond, 3 * time.Second},
		{time.Minute, 5 * time.Minute, time.Hour},
	}
	lateness := []time.Duration{NoLateness, 500 * time.Millisecond, 2 * time.Second, 7 * time.Second, 30 * time.Second}
	accuracy := []float64{0.01, 0.001, 0.05, 0.3}
	return scenario{
		sizes:    sizeSets[rng.IntN(len(sizeSets))],
		lateness: lateness[rng.IntN(len(lateness))],
		accuracy: accuracy[rng.IntN(len(accuracy))],
		streams:  1 + rng.IntN(3),
		devices:  1 + rng.IntN(40),
		calls:    500 + rng.IntN(2500),
	}
}

// randomValue returns a multiple of 0.25 in [-64, 64], often a repeat or zero,
// so that every sum of up to 2^45 of them is exact.
func randomValue(rng *rand.Rand, prev float64) float64 {
	switch rng.IntN(10) {
	case 0:
		return 0
	case 1, 2:
		return prev
	case 3:
		return float64(rng.IntN(8)-4) * 0.25
	default:
		return float64(rng.IntN(513)-256) * 0.25
	}
}

// runScenario drives an Engine and the model with the same random calls and
// compares everything observable after every call.
func runScenario(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	sc := randomScenario(rng)
	var got []Result
	e, err := New(Options{Sizes: sc.sizes, AllowedLateness: sc.lateness, Accuracy: sc.accuracy, OnClose: func(r Result) { got = append(got, r) }})
	require.NoError(t, err)
	lateness := sc.lateness
	if lateness == NoLateness {
		lateness = 0
	}
	m := newModel(sc.sizes, lateness)
	largest := slices.Max(sc.sizes).Milliseconds()
	step := max(1, largest/20) // time moves ~5% of the largest window per event

	clock := make([]int64, sc.streams)
	for i := range clock {
		clock[i] = 1_767_225_600_000 + rng.Int64N(largest) - largest/2
		if rng.IntN(4) == 0 {
			clock[i] = -clock[i] // negative event times work the same
		}
	}
	value := 0.0
	var nClosed, nLate, nOpen, nAdvance int
	for call := range sc.calls {
		si := rng.IntN(sc.streams)
		stream := fmt.Sprintf("stream-%d", si)
		var closed []*modelWindow
		var what func() string // describes the call, for failures
		switch r := rng.IntN(100); {
		case r < 2: // idle gap
			clock[si] += largest * (1 + rng.Int64N(3))
			continue
		case r < 6: // the processor's idle timeout
			w := clock[si] - lateness.Milliseconds() + rng.Int64N(2*largest) - largest/2
			what = func() string { return fmt.Sprintf("Advance(%s, %d)", stream, w) }
			closed = m.advance(stream, w)
			e.Advance(stream, w)
			nAdvance++
		default:
			clock[si] += rng.Int64N(step + 1)
			ts := clock[si]
			switch d := rng.IntN(20); {
			case d < 8: // in order
			case d < 18: // disorder within the lateness, mostly
				ts -= rng.Int64N(lateness.Milliseconds() + 2)
			default: // well beyond it: late for some or all sizes
				ts -= rng.Int64N(3*largest + 1)
			}
			device := ""
			if rng.IntN(20) != 0 {
				device = fmt.Sprintf("dev-%d", rng.IntN(sc.devices))
			}
			value = randomValue(rng, value)
			what = func() string { return fmt.Sprintf("Add(%s, %q, %d, %v)", stream, device, ts, value) }
			var wantLate bool
			wantLate, closed = m.add(stream, device, ts, value)
			if gotLate := e.Add(stream, device, ts, value); gotLate != wantLate {
				t.Fatalf("call %d %s: late %v, want %v", call, what(), gotLate, wantLate)
			}
			if wantLate {
				nLate++
			}
		}
		if len(got) != len(closed) {
			t.Fatalf("call %d %s: %d windows closed, want %d", call, what(), len(got), len(closed))
		}
		for i, want := range closed {
			checkResult(t, sc.accuracy, stream, want, got[i], true)
		}
		nClosed += len(closed)
		got = got[:0]
		ms := m.streams[stream]
		if n := e.Late(stream); n != ms.late {
			t.Fatalf("call %d %s: Late %d, want %d", call, what(), n, ms.late)
		}
		if w, ok := e.Watermark(stream); ok != ms.hasW || ok && w != ms.w {
			t.Fatalf("call %d %s: Watermark %d, %v; want %d, %v", call, what(), w, ok, ms.w, ms.hasW)
		}
		if rng.IntN(50) == 0 {
			checkOpen(t, rng, e, m, sc, stream, clock[si])
			nOpen++
		}
	}
	// Close everything: every window the model has must come out once, in order.
	t.Logf("sizes %v, lateness %v, accuracy %v, %d streams, %d devices, %d calls: %d closed, %d late, %d Advance, %d Open before the end; %d open at the end",
		sc.sizes, sc.lateness, sc.accuracy, sc.streams, sc.devices, sc.calls, nClosed, nLate, nAdvance, nOpen, m.openCount())
	for si := range sc.streams {
		stream := fmt.Sprintf("stream-%d", si)
		closed := m.advance(stream, math.MaxInt64)
		e.Advance(stream, math.MaxInt64)
		require.Equal(t, len(closed), len(got), "windows closed at the end")
		for i, want := range closed {
			checkResult(t, sc.accuracy, stream, want, got[i], true)
		}
		got = got[:0]
	}
	require.Zero(t, e.OpenWindows())
	for _, s := range e.streams {
		require.Zero(t, s.keys.n, "keys without open windows are dropped")
	}
}

func checkOpen(t *testing.T, rng *rand.Rand, e *Engine, m *model, sc scenario, stream string, now int64) {
	t.Helper()
	require.Equal(t, m.openCount(), e.OpenWindows(), "OpenWindows")
	device := []string{"*", "", fmt.Sprintf("dev-%d", rng.IntN(sc.devices))}[rng.IntN(3)]
	size := time.Duration(0)
	if rng.IntN(2) == 0 {
		size = sc.sizes[rng.IntN(len(sc.sizes))]
	}
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	if rng.IntN(2) == 0 {
		span := slices.Max(sc.sizes).Milliseconds()
		from = now - rng.Int64N(2*span)
		to = from + rng.Int64N(2*span)
	}
	want := m.openWindows(stream, device, size, from, to)
	got := e.Open(stream, device, size, from, to)
	require.Equal(t, len(want), len(got), "Open(%s, %q, %v, %d, %d)", stream, device, size, from, to)
	for i := range want {
		checkResult(t, sc.accuracy, stream, want[i], got[i], false)
	}
}

// TestEngineMatchesModel runs randomized scenarios, each a few thousand calls
// over several streams and devices, against the brute-force model.
func TestEngineMatchesModel(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42, 1234, 99999}
	for i := range 187 {
		seeds = append(seeds, 1000+uint64(i))
	}
	random := rand.Uint64()
	t.Logf("random seed %d (rerun a failure by adding it to the list)", random)
	seeds = append(seeds, random)
	if testing.Short() || raceEnabled {
		seeds = append(seeds[:40], random)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runScenario(t, seed) })
	}
}
