package window

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// resultBits is a Result with its floats as bits and its sketch encoded, so
// that == compares everything exactly.
type resultBits struct {
	Stream, DeviceID          string
	Size                      time.Duration
	Start, End                int64
	Count                     uint64
	Sum, Min, Max, Mean, Last uint64
	Overflow                  bool
	LastTS                    int64
	P50, P95, P99             uint64
	Sketch                    string // MarshalBinary
	SketchCount               uint64
	Final                     bool
}

func bitsOf(r Result) resultBits {
	f := math.Float64bits
	sk, err := r.Sketch.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return resultBits{
		Stream: r.Stream, DeviceID: r.DeviceID, Size: r.Size, Start: r.Start, End: r.End, Count: r.Count,
		Sum: f(r.Sum), Overflow: r.Overflow, Min: f(r.Min), Max: f(r.Max), Mean: f(r.Mean), Last: f(r.Last), LastTS: r.LastTS,
		P50: f(r.P50), P95: f(r.P95), P99: f(r.P99), Sketch: string(sk), SketchCount: r.Sketch.Count(), Final: r.Final,
	}
}

func allBits(rs []Result) []resultBits {
	out := make([]resultBits, len(rs))
	for i, r := range rs {
		out[i] = bitsOf(r)
	}
	return out
}

// stateCall is one Add or Advance.
type stateCall struct {
	advance        bool
	stream, device string
	ts             int64 // the watermark, for Advance
	v              float64
}

func (c stateCall) String() string {
	if c.advance {
		return fmt.Sprintf("Advance(%s, %d)", c.stream, c.ts)
	}
	return fmt.Sprintf("Add(%s, %q, %d, %v)", c.stream, c.device, c.ts, c.v)
}

func (c stateCall) apply(e *Engine) {
	if c.advance {
		e.Advance(c.stream, c.ts)
	} else {
		e.Add(c.stream, c.device, c.ts, c.v)
	}
}

// randomCalls generates the calls runScenario makes, and a few more: events
// outside [MinTime, MaxTime], and sometimes a stream "quiet" whose watermark
// starts at math.MinInt64 and which gets an event only late in the sequence.
func randomCalls(rng *rand.Rand, sc scenario) []stateCall {
	lateness := sc.lateness
	if lateness == NoLateness {
		lateness = 0
	}
	largest := slices.Max(sc.sizes).Milliseconds()
	step := max(1, largest/20)
	clock := make([]int64, sc.streams)
	for i := range clock {
		clock[i] = 1_767_225_600_000 + rng.Int64N(largest) - largest/2
		if rng.IntN(4) == 0 {
			clock[i] = -clock[i]
		}
	}
	value := 0.0
	var calls []stateCall
	for range sc.calls {
		si := rng.IntN(sc.streams)
		stream := fmt.Sprintf("stream-%d", si)
		switch r := rng.IntN(200); {
		case r < 4: // idle gap
			clock[si] += largest * (1 + rng.Int64N(3))
		case r < 12:
			w := clock[si] - lateness.Milliseconds() + rng.Int64N(2*largest) - largest/2
			calls = append(calls, stateCall{advance: true, stream: stream, ts: w})
		case r < 13:
			calls = append(calls, stateCall{stream: stream, device: "dev-0", ts: []int64{MaxTime + 1, MinTime - 1}[rng.IntN(2)], v: 1})
		default:
			clock[si] += rng.Int64N(step + 1)
			ts := clock[si]
			switch d := rng.IntN(20); {
			case d < 8:
			case d < 18:
				ts -= rng.Int64N(lateness.Milliseconds() + 2)
			default:
				ts -= rng.Int64N(3*largest + 1)
			}
			device := ""
			if rng.IntN(20) != 0 {
				device = fmt.Sprintf("dev-%d", rng.IntN(sc.devices))
			}
			value = randomValue(rng, value)
			calls = append(calls, stateCall{stream: stream, device: device, ts: ts, v: value})
		}
	}
	if rng.IntN(3) == 0 && len(calls) > 0 {
		at := func(lo int) int { return lo + rng.IntN(len(calls)-lo+1) }
		i := at(0)
		calls = slices.Insert(calls, i, stateCall{advance: true, stream: "quiet", ts: math.MinInt64})
		j := at(i + 1)
		calls = slices.Insert(calls, j, stateCall{stream: "quiet", device: "q", ts: MaxTime + 1, v: 2})
		calls = slices.Insert(calls, at(j+1), stateCall{stream: "quiet", device: "q", ts: clock[0], v: 3})
	}
	return calls
}

// hugeValues scales the values of calls up to ±2^1023, so that sums of a few
// overflow float64 and spill (window.addSum).
func hugeValues(calls []stateCall) {
	for i := range calls {
		calls[i].v = math.Ldexp(calls[i].v, 1017)
	}
}

// stateRig runs the same calls through an Engine A that never stops, an
// Engine B restored from a checkpoint of A, and two Engines C[0], C[1] that
// share A's streams between them and are themselves checkpointed and
// restored, with the streams swapped over, once more.
type stateRig struct {
	t                *testing.T
	opts             Options
	a, b             *Engine
	c                [2]*Engine
	route            map[string]int // stream → index into c
	gotA, gotB, gotC []resultBits
	compared         int // closed windows compared
}

func (r *stateRig) engine(got *[]resultBits) *Engine {
	o := r.opts
	o.OnClose = func(res Result) { *got = append(*got, bitsOf(res)) }
	e, err := New(o)
	require.NoError(r.t, err)
	return e
}

// checkpoint encodes every stream of e, twice, and requires equal bytes.
func (r *stateRig) checkpoint(e *Engine) map[string][]byte {
	out := map[string][]byte{}
	for _, s := range e.Streams() {
		b := e.AppendStreamState(nil, s)
		require.Equal(r.t, b, e.AppendStreamState([]byte{}, s), "encoding %s twice", s)
		name, err := StreamStateName(b)
		require.NoError(r.t, err)
		require.Equal(r.t, s, name)
		out[s] = b
	}
	return out
}

func (r *stateRig) restore(e *Engine, state []byte) {
	name, err := e.RestoreStream(state)
	require.NoError(r.t, err)
	require.Equal(r.t, state, e.AppendStreamState(nil, name), "a restored stream encodes as it was encoded")
}

func (r *stateRig) cOf(stream string) *Engine {
	i, ok := r.route[stream]
	if !ok {
		i = len(r.route) % 2
		r.route[stream] = i
	}
	return r.c[i]
}

// start checkpoints A into fresh B and C engines.
func (r *stateRig) start() {
	r.b = r.engine(&r.gotB)
	r.c = [2]*Engine{r.engine(&r.gotC), r.engine(&r.gotC)}
	r.route = map[string]int{}
	states := r.checkpoint(r.a)
	for i, s := range r.a.Streams() {
		r.restore(r.b, states[s])
		r.route[s] = i % 2
		r.restore(r.c[i%2], states[s])
	}
	r.requireSameState()
}

// restart checkpoints the C engines into fresh ones, each stream moving to
// the other.
func (r *stateRig) restart() {
	old := r.c
	r.c = [2]*Engine{r.engine(&r.gotC), r.engine(&r.gotC)}
	for i, e := range old {
		for s, st := range r.checkpoint(e) {
			r.restore(r.c[1-i], st)
			r.route[s] = 1 - i
		}
	}
	r.requireSameState()
}

// requireSameState requires identical encodings of every stream in A, B and C.
func (r *stateRig) requireSameState() {
	t := r.t
	want := r.checkpoint(r.a)
	require.Equal(t, want, r.checkpoint(r.b), "B")
	got := r.checkpoint(r.c[0])
	for s, b := range r.checkpoint(r.c[1]) {
		require.NotContains(t, got, s, "a stream in both C engines")
		got[s] = b
	}
	require.Equal(t, want, got, "C")
}

// requireSameObservables compares every reading of the stream.
func (r *stateRig) requireSameObservables(stream string, what func() string) {
	t := r.t
	for _, x := range []*Engine{r.b, r.cOf(stream)} {
		if a, b := r.a.Late(stream), x.Late(stream); a != b {
			t.Fatalf("%s: Late %d, want %d", what(), b, a)
		}
		aw, aok := r.a.Watermark(stream)
		bw, bok := x.Watermark(stream)
		if aw != bw || aok != bok {
			t.Fatalf("%s: Watermark %d %v, want %d %v", what(), bw, bok, aw, aok)
		}
		ae, aok := r.a.EarliestEnd(stream)
		be, bok := x.EarliestEnd(stream)
		if ae != be || aok != bok {
			t.Fatalf("%s: EarliestEnd %d %v, want %d %v", what(), be, bok, ae, aok)
		}
	}
}

func (r *stateRig) requireSameOpen(rng *rand.Rand, sc scenario, stream string) {
	t := r.t
	device := []string{"*", "", fmt.Sprintf("dev-%d", rng.IntN(sc.devices))}[rng.IntN(3)]
	size := time.Duration(0)
	if rng.IntN(2) == 0 {
		size = sc.sizes[rng.IntN(len(sc.sizes))]
	}
	want := allBits(r.a.Open(stream, device, size, math.MinInt64, math.MaxInt64))
	require.Equal(t, want, allBits(r.b.Open(stream, device, size, math.MinInt64, math.MaxInt64)), "B Open")
	require.Equal(t, want, allBits(r.cOf(stream).Open(stream, device, size, math.MinInt64, math.MaxInt64)), "C Open")
	require.Equal(t, r.a.OpenWindows(), r.b.OpenWindows(), "B OpenWindows")
	require.Equal(t, r.a.OpenWindows(), r.c[0].OpenWindows()+r.c[1].OpenWindows(), "C OpenWindows")
}

// requireSameResults compares what OnClose received since the last call.
func (r *stateRig) requireSameResults(what func() string) {
	if !slices.Equal(r.gotA, r.gotB) {
		require.Equal(r.t, r.gotA, r.gotB, "%s: B's closed windows", what())
	}
	if !slices.Equal(r.gotA, r.gotC) {
		require.Equal(r.t, r.gotA, r.gotC, "%s: C's closed windows", what())
	}
	r.compared += len(r.gotA)
	r.gotA, r.gotB, r.gotC = r.gotA[:0], r.gotB[:0], r.gotC[:0]
}

// runStateScenario runs a random scenario through A, checkpoints it at a
// random call into B and C, and requires that they continue exactly as A.
func runStateScenario(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x57a7e))
	sc := randomScenario(rng)
	if rng.IntN(4) == 0 {
		sc.devices = 100 + rng.IntN(400) // many keys
	}
	calls := randomCalls(rng, sc)
	if seed%4 == 0 {
		hugeValues(calls)
	}
	cut := rng.IntN(len(calls) + 1)
	cut2 := cut + rng.IntN(len(calls)-cut+1)
	r := &stateRig{t: t, opts: Options{Sizes: sc.sizes, AllowedLateness: sc.lateness, Accuracy: sc.accuracy}}
	r.a = r.engine(&r.gotA)
	for _, c := range calls[:cut] {
		c.apply(r.a)
	}
	r.gotA = r.gotA[:0]
	r.start()
	atCut := r.a.OpenWindows()
	for _, s := range r.a.Streams() {
		r.requireSameObservables(s, func() string { return "after the restore" })
		r.requireSameOpen(rng, sc, s)
	}
	for i, c := range calls[cut:] {
		if cut+i == cut2 {
			r.restart()
		}
		what := func() string { return fmt.Sprintf("call %d (checkpoint at %d, %d) %v", cut+i, cut, cut2, c) }
		c.apply(r.a)
		c.apply(r.b)
		c.apply(r.cOf(c.stream))
		r.requireSameResults(what)
		r.requireSameObservables(c.stream, what)
		if rng.IntN(50) == 0 {
			r.requireSameOpen(rng, sc, c.stream)
		}
	}
	r.requireSameState()
	before := r.compared
	for _, s := range r.a.Streams() {
		r.a.Advance(s, math.MaxInt64)
		r.b.Advance(s, math.MaxInt64)
		r.cOf(s).Advance(s, math.MaxInt64)
		r.requireSameResults(func() string { return "closing " + s })
	}
	require.Zero(t, r.b.OpenWindows())
	require.Zero(t, r.c[0].OpenWindows()+r.c[1].OpenWindows())
	t.Logf("sizes %v, lateness %v, accuracy %v, %d devices, %d calls, checkpoints at %d and %d; %d windows open at the first, %d closed after it, %d of them at the end",
		sc.sizes, sc.lateness, sc.accuracy, sc.devices, len(calls), cut, cut2, atCut, r.compared, r.compared-before)
}

// TestStateRestoreMatchesUninterrupted: an Engine restored from a checkpoint,
// or two sharing its streams, continue exactly as the Engine that never
// stopped: the same closed windows in the same order, bit for bit, the same
// partial results, watermarks, late counts and state.
func TestStateRestoreMatchesUninterrupted(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for i := range 190 {
		seeds = append(seeds, 2000+uint64(i))
	}
	random := rand.Uint64()
	t.Logf("random seed %d (rerun a failure by adding it to the list)", random)
	seeds = append(seeds, random)
	if testing.Short() || raceEnabled {
		seeds = append(seeds[:40], random)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runStateScenario(t, seed) })
	}
}

func TestStateStreams(t *testing.T) {
	e, err := New(Options{})
	require.NoError(t, err)
	require.Empty(t, e.Streams())
	e.Add("b", "d", 1_000, 1)
	e.Advance("c", 5)
	e.Add("a", "d", MaxTime+1, 1) // late only
	require.Equal(t, []string{"a", "b", "c"}, e.Streams())

	// A stream the engine does not hold encodes as an empty one, which
	// restores to a stream with no state.
	empty := e.AppendStreamState(nil, "none")
	f, err := New(Options{})
	require.NoError(t, err)
	name, err := f.RestoreStream(empty)
	require.NoError(t, err)
	require.Equal(t, "none", name)
	require.Equal(t, []string{"none"}, f.Streams())
	_, ok := f.Watermark("none")
	require.False(t, ok)
	require.Equal(t, empty, f.AppendStreamState(nil, "none"))

	// Appending keeps dst.
	out := e.AppendStreamState([]byte("prefix"), "b")
	require.True(t, bytes.HasPrefix(out, []byte("prefix")))
	require.Equal(t, e.AppendStreamState(nil, "b"), out[len("prefix"):])

	// A pending event is in the state.
	g, err := New(Options{})
	require.NoError(t, err)
	g.Add("s", "d", 10_000, 4)
	require.NotEmpty(t, g.pending)
	st := g.AppendStreamState(nil, "s")
	require.Empty(t, g.pending, "flushed")
	h, err := New(Options{})
	require.NoError(t, err)
	_, err = h.RestoreStream(st)
	require.NoError(t, err)
	require.Equal(t, 6, h.OpenWindows())
	require.Equal(t, uint64(1), h.Open("s", "d", time.Minute, math.MinInt64, math.MaxInt64)[0].Count)
}

func TestStateFromOnClosePanics(t *testing.T) {
	var e *Engine
	e, err := New(Options{Sizes: []time.Duration{time.Second}, AllowedLateness: NoLateness, OnClose: func(Result) {
		e.AppendStreamState(nil, "s")
	}})
	require.NoError(t, err)
	e.Add("s", "d", 100, 1)
	require.PanicsWithValue(t, "window: AppendStreamState called from OnClose", func() { e.Advance("s", 2_000) })
}

func TestStateConfigMismatch(t *testing.T) {
	a, err := New(Options{})
	require.NoError(t, err)
	a.Add("s", "d", 1_767_225_600_000, 1)
	st := a.AppendStreamState(nil, "s")
	for name, o := range map[string]Options{
		"sizes":    {Sizes: []time.Duration{time.Minute, time.Hour}},
		"order":    {Sizes: []time.Duration{time.Minute, 5 * time.Minute, 2 * time.Hour}},
		"accuracy": {Accuracy: 0.02},
		"lateness": {AllowedLateness: NoLateness},
	} {
		t.Run(name, func(t *testing.T) {
			e, err := New(o)
			require.NoError(t, err)
			stream, err := e.RestoreStream(st)
			require.ErrorIs(t, err, ErrStateConfig)
			require.ErrorContains(t, err, "the state has sizes [1m0s 5m0s 1h0m0s], allowed lateness 30s, accuracy 0.01, this engine sizes")
			require.Equal(t, "s", stream, "named even so")
			require.Empty(t, e.Streams())
		})
	}
	e, err := New(Options{Sizes: []time.Duration{time.Hour, 5 * time.Minute, time.Minute}, AllowedLateness: 30 * time.Second, Accuracy: 0.01})
	require.NoError(t, err)
	_, err = e.RestoreStream(st)
	require.NoError(t, err, "the same options, spelt differently")
}

func TestStateRestoreTwice(t *testing.T) {
	a, err := New(Options{})
	require.NoError(t, err)
	a.Add("s", "d", 1_767_225_600_000, 1)
	st := a.AppendStreamState(nil, "s")
	e, err := New(Options{})
	require.NoError(t, err)
	_, err = e.RestoreStream(st)
	require.NoError(t, err)
	before := e.AppendStreamState(nil, "s")
	name, err := e.RestoreStream(st)
	require.EqualError(t, err, `window: stream "s" already has state in this engine`)
	require.Equal(t, "s", name)
	require.Equal(t, before, e.AppendStreamState(nil, "s"))
	require.Equal(t, 6, e.OpenWindows())

	_, err = a.RestoreStream(st)
	require.Error(t, err, "nor into the engine that holds it")
	a.Add("t", "d", 1, 1)
	_, err = a.RestoreStream(a.AppendStreamState(nil, "t"))
	require.Error(t, err)
}

// stateBuilder writes stream states by hand, for an Engine of sizes 1s and 2s,
// allowed lateness 1s, accuracy 0.01.
type stateBuilder struct{ b []byte }

var builderOptions = Options{Sizes: []time.Duration{time.Second, 2 * time.Second}, AllowedLateness: time.Second}

func (s *stateBuilder) u(vs ...uint64) *stateBuilder {
	for _, v := range vs {
		s.b = binary.AppendUvarint(s.b, v)
	}
	return s
}
func (s *stateBuilder) i(v int64) *stateBuilder     { s.b = binary.AppendVarint(s.b, v); return s }
func (s *stateBuilder) raw(b ...byte) *stateBuilder { s.b = append(s.b, b...); return s }
func (s *stateBuilder) str(v string) *stateBuilder  { s.b = appendStr(s.b, v); return s }
func (s *stateBuilder) f(vs ...float64) *stateBuilder {
	for _, v := range vs {
		s.b = binary.LittleEndian.AppendUint64(s.b, math.Float64bits(v))
	}
	return s
}

// head writes version, stream "s" and the configuration; then flags,
// watermark and max_ts if set by flags, and late 0.
func (s *stateBuilder) head(flags byte, w, maxTS int64) *stateBuilder {
	s.raw(stateVersion).str("s").u(2, 1000, 2000, 1000).f(0.01).raw(flags)
	if flags&1 != 0 {
		s.i(w)
	}
	if flags&2 != 0 {
		s.i(maxTS)
	}
	return s.u(0)
}

// win writes a window of size index size, start offset q, holding value v
// (none if NaN) with last_ts offset off.
func (s *stateBuilder) win(size, q uint64, v float64, off uint64) *stateBuilder {
	s.u(size, q)
	if math.IsNaN(v) {
		return s.u(0, 0, 0)
	}
	sk := NewSketch(0.01)
	sk.Add(v)
	s.raw(sk.AppendBinary(nil)[9:]...)
	return s.f(v, v, v, v).u(off)
}

func TestStateCorrupt(t *testing.T) {
	empty := math.NaN()
	b := func() *stateBuilder { return &stateBuilder{} }
	// w = 9000, maxTS = 9500: the 1s window starting at 9000 (q 0) and its
	// parent, the 2s window starting at 8000 (q 0).
	valid := b().head(3, 9000, 9500).u(2).win(0, 0, 5, 500).win(1, 0, empty, 0).
		u(1).str("d").u(2).win(0, 0, 5, 500).win(1, 0, empty, 0).b
	e, err := New(builderOptions)
	require.NoError(t, err)
	_, err = e.RestoreStream(valid)
	require.NoError(t, err, "the hand-made state is valid")
	require.Equal(t, valid, e.AppendStreamState(nil, "s"))
	spilled := b().head(7, 9000, 9500).u(2).win(0, 0, 5, 500).f(1).win(1, 0, empty, 0).u(0).b
	e, err = New(builderOptions)
	require.NoError(t, err)
	_, err = e.RestoreStream(spilled)
	require.NoError(t, err, "a state with a spilled sum is valid")
	require.Equal(t, spilled, e.AppendStreamState(nil, "s"))

	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":                {nil, "truncated (at byte 0)"},
		"unknown version":      {append([]byte{2}, valid[1:]...), "unknown version 2"},
		"name too long":        {b().raw(1).u(5).raw('a').b, "string of 5 bytes with 1 left"},
		"no sizes":             {b().raw(1).str("s").u(0).b, "0 window sizes"},
		"17 sizes":             {b().raw(1).str("s").u(17).b, "17 window sizes"},
		"size too small":       {b().raw(1).str("s").u(1, 999).b, "window size 999 ms out of range"},
		"sizes descending":     {b().raw(1).str("s").u(2, 2000, 1000).b, "window sizes not strictly ascending"},
		"accuracy NaN":         {b().raw(1).str("s").u(1, 1000, 0).f(math.NaN()).b, "accuracy NaN outside"},
		"lateness too large":   {b().raw(1).str("s").u(1, 1000, 1<<62).b, "allowed lateness 4611686018427387904 ms out of range"},
		"unknown flags":        {b().raw(1).str("s").u(2, 1000, 2000, 1000).f(0.01).raw(8).b, "unknown flags 0x8 (stream header"},
		"spill flag, no spill": {b().head(7, 9000, 9500).u(2).win(0, 0, 5, 500).f(0).win(1, 0, empty, 0).u(0).b, "flag of a spilled sum, and no window has one (end"},
		"sum not finite":       {b().head(3, 9000, 9500).u(2).win(0, 0, math.Inf(1), 500).win(1, 0, empty, 0).u(0).b, "window 0: an aggregate is not finite"},
		"over not finite":      {b().head(7, 9000, 9500).u(2).win(0, 0, 5, 500).f(math.NaN()).win(1, 0, empty, 0).u(0).b, "window 0: an aggregate is not finite"},
		"max_ts, no watermark": {b().head(2, 0, 9500).u(0, 0).b, "highest event time set without a watermark"},
		"watermark too low":    {b().head(3, 8000, 9500).u(0, 0).b, "watermark 8000 below the highest event time 9500"},
		"max_ts out of range":  {b().head(3, MaxTime, MaxTime+1).u(0, 0).b, "outside [MinTime, MaxTime]"},
		"windows, no event":    {b().head(1, 9000, 0).u(1).win(0, 0, 5, 500).u(0).b, "windows but no event seen (site-wide windows"},
		"size index":           {b().head(3, 9000, 9500).u(1).win(2, 0, 5, 500).u(0).b, "window 0: size index 2 with 2 sizes"},
		"start too late":       {b().head(3, 9000, 9500).u(2).win(0, 1, 5, 500).win(1, 0, empty, 0).u(0).b, "window 0: starts after the highest event time"},
		"not ascending":        {b().head(3, 9000, 9500).u(2).win(1, 0, empty, 0).win(0, 0, 5, 500).u(0).b, "window 1: not after the one before"},
		"duplicate":            {b().head(3, 9000, 9500).u(2).win(0, 0, 5, 500).win(0, 0, 5, 500).u(0).b, "window 1: not after the one before"},
		"no parent":            {b().head(3, 9000, 9500).u(1).win(0, 0, 5, 500).u(0).b, "window 0: its parent of size 2s is not open"},
		"empty leaf":           {b().head(3, 9000, 9500).u(2).win(0, 0, empty, 0).win(1, 0, empty, 0).u(0).b, "window 0: empty, and no child window is open"},
		"last_ts too late":     {b().head(3, 9000, 9500).u(2).win(0, 0, 5, 1000).win(1, 0, empty, 0).u(0).b, "last event time 1000 ms past the start of a 1000 ms window"},
		"counts overflow":      {b().head(3, 9000, 9500).u(1).u(0, 0, 1<<62+1).b, "counts add up to more than 2^62"},
		"counts overflow in buckets": {b().head(3, 9000, 9500).u(2).u(0, 0, 0, 0, 1, 0, 1<<62).f(1, 1, 1, 1).u(0).
			u(1, 0, 0, 1, 0, 1, 0).u(0).b, "window 1: counts add up to more than 2^62"},
		"bad bucket":       {b().head(3, 9000, 9500).u(1).u(0, 0, 0, 1).i(1 << 40).u(1).b, "bucket index 1099511627776 outside"},
		"too many windows": {b().head(3, 9000, 9500).u(1000).b, "1000 windows in 0 bytes"},
		"too many devices": {b().head(3, 9000, 9500).u(0, 1000).b, "1000 devices in 0 bytes (device count"},
		"empty device id":  {b().head(3, 9000, 9500).u(0, 1).str("").u(2).win(0, 0, 5, 500).win(1, 0, empty, 0).b, "empty device id (device 1 of 1"},
		"device order": {b().head(3, 9000, 9500).u(0, 2).str("b").u(2).win(0, 0, 5, 500).win(1, 0, empty, 0).
			str("a").u(2).win(0, 0, 5, 500).win(1, 0, empty, 0).b, `device id not after "b" (device 2 of 2, "a"`},
		"device twice": {b().head(3, 9000, 9500).u(0, 2).str("b").u(2).win(0, 0, 5, 500).win(1, 0, empty, 0).
			str("b").u(2).win(0, 0, 5, 500).win(1, 0, empty, 0).b, `device id not after "b"`},
		"device, no windows": {b().head(3, 9000, 9500).u(0, 1).str("d").u(0).raw(0, 0, 0, 0, 0, 0).b, `device without windows (device 1 of 1, "d"`},
		"trailing bytes":     {append(slices.Clip(valid), 0), "1 trailing bytes (end"},
		"overlong varint":    {b().raw(1).raw(0x81, 0x00).raw('s').b, "varint not minimally encoded"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e, unchanged := engineWithOther(t)
			_, err := e.RestoreStream(c.data)
			require.ErrorIs(t, err, ErrCorruptState)
			require.ErrorContains(t, err, c.want)
			unchanged()
		})
	}

	// Every proper prefix of real states is refused.
	a, err := New(builderOptions)
	require.NoError(t, err)
	for i := range 200 {
		a.Add("s", fmt.Sprint("d", i%7), int64(i*37), float64(i*i)-300)
	}
	for _, st := range [][]byte{valid, a.AppendStreamState(nil, "s")} {
		e, unchanged := engineWithOther(t)
		for n := range len(st) {
			_, err := e.RestoreStream(st[:n])
			require.ErrorIs(t, err, ErrCorruptState, "prefix of %d bytes", n)
		}
		unchanged()
	}
	// Every byte flipped: refused, or (a float, say) a state that encodes back
	// to the same bytes.
	st := a.AppendStreamState(nil, "s")
	accepted := 0
	for i := range st {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			bad := slices.Clone(st)
			bad[i] ^= x
			e, err := New(builderOptions)
			require.NoError(t, err)
			name, err := e.RestoreStream(bad)
			if err != nil {
				require.True(t, errors.Is(err, ErrCorruptState) || errors.Is(err, ErrStateConfig), "%v", err)
				continue
			}
			accepted++
			require.Equal(t, bad, e.AppendStreamState(nil, name))
		}
	}
	t.Logf("%d of %d byte flips accepted", accepted, 3*len(st))

	_, err = StreamStateName(nil)
	require.ErrorIs(t, err, ErrCorruptState)
	_, err = StreamStateName([]byte{1, 3, 'a'})
	require.ErrorContains(t, err, "string of 3 bytes with 1 left")
	name, err := StreamStateName([]byte{1, 1, 'a'})
	require.NoError(t, err, "it reads no further")
	require.Equal(t, "a", name)
}

// engineWithOther returns an Engine of builderOptions holding a stream
// "other", and a func that requires it unchanged.
func engineWithOther(t *testing.T) (*Engine, func()) {
	e, err := New(builderOptions)
	require.NoError(t, err)
	e.Add("other", "d", 5_000, 1)
	e.Add("other", "d", 6_500, 2)
	other, open := e.AppendStreamState(nil, "other"), e.OpenWindows()
	require.Equal(t, 8, open)
	return e, func() {
		t.Helper()
		require.Equal(t, []string{"other"}, e.Streams(), "unchanged")
		require.Equal(t, open, e.OpenWindows(), "unchanged")
		require.Equal(t, other, e.AppendStreamState(nil, "other"), "unchanged")
	}
}

// fuzzSeedStates returns the states of a few short random scenarios.
func fuzzSeedStates() [][]byte {
	var out [][]byte
	for seed := range uint64(8) {
		rng := rand.New(rand.NewPCG(seed, 77))
		sc := randomScenario(rng)
		sc.calls, sc.devices = 60+rng.IntN(100), 1+rng.IntN(4)
		calls := randomCalls(rng, sc)
		if seed%2 == 1 {
			hugeValues(calls)
		}
		e, err := New(Options{Sizes: sc.sizes, AllowedLateness: sc.lateness, Accuracy: sc.accuracy})
		if err != nil {
			panic(err)
		}
		for _, c := range calls {
			c.apply(e)
		}
		for _, s := range e.Streams() {
			out = append(out, e.AppendStreamState(nil, s))
		}
	}
	return out
}

// FuzzRestoreStream feeds arbitrary bytes to RestoreStream, in an Engine of
// the options their header names when it is valid: it must never panic; what
// it refuses leaves the Engine empty; what it accepts encodes back to the same
// bytes and can be read and closed.
func FuzzRestoreStream(f *testing.F) {
	for _, st := range fuzzSeedStates() {
		f.Add(st)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := decoder{b: data, corrupt: ErrCorruptState}
		d.stateName()
		cfg := d.stateConfig()
		var o Options
		if d.err == nil {
			o = cfg.options()
		}
		var got []Result
		o.OnClose = func(r Result) { got = append(got, r) }
		e, err := New(o)
		require.NoError(t, err, "a configuration the decoder accepts is valid")
		name, err := e.RestoreStream(data)
		if err != nil {
			require.ErrorIs(t, err, ErrCorruptState)
			require.Empty(t, e.Streams())
			require.Zero(t, e.OpenWindows())
			return
		}
		n, err := StreamStateName(data)
		require.NoError(t, err)
		require.Equal(t, name, n)
		require.Equal(t, data, e.AppendStreamState(nil, name), "accepted bytes are canonical")
		open := e.OpenWindows()
		partial := e.Open(name, "*", 0, math.MinInt64, math.MaxInt64)
		require.Len(t, partial, open)
		for _, r := range partial {
			require.NotZero(t, r.Count, "partial results hold values")
		}
		end, ok := e.EarliestEnd(name)
		require.Equal(t, open > 0, ok)
		if w, ok := e.Watermark(name); ok && open > 0 {
			require.Greater(t, end, w, "open windows end after the watermark")
		}
		e.Advance(name, math.MaxInt64)
		require.Zero(t, e.OpenWindows())
		require.Len(t, got, open, "every window closes once")
		for _, r := range got {
			require.NotZero(t, r.Count)
			require.Equal(t, r.Count, r.Sketch.Count())
		}
	})
}

// benchStates holds the state of 100 000 keys: 4 streams of 25 000 devices
// each, default options, every device reporting once a second (jittered by
// ±0.5 s) from 4m30s to 6m30s past the hour inclusive: each key has a 1-minute, a
// 5-minute and a 1-hour window open, none empty (the 5-minute window holds
// a closed minute, the 1-hour window a closed 5 minutes).
var benchStates = sync.OnceValues(func() (*Engine, [][]byte) {
	const (
		streams       = 4
		devices       = 25_000
		t0      int64 = 1_767_225_600_000 + 270_000
	)
	rng := rand.New(rand.NewPCG(3, 4))
	names := []string{"temperature", "humidity", "pressure", "power"}
	level := make([]float64, streams*devices)
	for i := range level {
		level[i] = 10 + rng.Float64()*30
	}
	ids := make([]string, devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("device-%06d", i)
	}
	e, err := New(Options{})
	if err != nil {
		panic(err)
	}
	for sec := range int64(121) {
		for k := range streams * devices {
			e.Add(names[k/devices], ids[k%devices], t0+sec*1000+rng.Int64N(1000)-500, level[k]+rng.Float64()-0.5)
		}
	}
	var out [][]byte
	for _, s := range e.Streams() {
		out = append(out, e.AppendStreamState(nil, s))
	}
	return e, out
})

const benchKeys = 100_000

// BenchmarkStateEncode encodes the state of 100 000 keys (see benchStates).
//
//	go test ./internal/window/ -run '^$' -bench BenchmarkState -benchtime 20x
func BenchmarkStateEncode(b *testing.B) {
	e, states := benchStates()
	total := 0
	for _, s := range states {
		total += len(s)
	}
	streams := e.Streams()
	buf := make([]byte, 0, total)
	b.SetBytes(int64(total))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		buf = buf[:0]
		for _, s := range streams {
			buf = e.AppendStreamState(buf, s)
		}
	}
	b.StopTimer()
	require.Equal(b, total, len(buf))
	b.ReportMetric(float64(total)/benchKeys, "B/key")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchKeys, "ns/key")
	b.ReportMetric(float64(e.OpenWindows())/benchKeys, "windows/key")
}

// BenchmarkStateRestore restores the state of 100 000 keys (see benchStates)
// into a fresh Engine.
func BenchmarkStateRestore(b *testing.B) {
	_, states := benchStates()
	total := 0
	for _, s := range states {
		total += len(s)
	}
	b.SetBytes(int64(total))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		e, err := New(Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range states {
			if _, err := e.RestoreStream(s); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/benchKeys, "B/key")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchKeys, "ns/key")
}
