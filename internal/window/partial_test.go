package window

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var partialKey = Key{Stream: "temp", DeviceID: "d1", Size: time.Minute, Start: 1_764_158_400_000}

type tsValue struct {
	ts int64
	v  float64
}

// randomEvents returns n events of partialKey's window. Values are k·2^e for
// small integers k and one exponent e, so that every sum is exact however it
// is grouped — including e near the top of float64, where sums spill into
// the carry — and event times and values repeat, for the ties of last.
func randomEvents(rng *rand.Rand, n int) []tsValue {
	e := []int{-20, 0, 30, 1000}[rng.IntN(4)]
	out := make([]tsValue, n)
	for i := range out {
		k := float64(rng.IntN(1<<21) - 1<<20)
		if rng.IntN(8) == 0 {
			k = float64(rng.IntN(3) - 1) // zeros and ±1 repeat
		}
		v := math.Ldexp(k, e)
		if v == 0 && rng.IntN(2) == 0 {
			v = math.Copysign(0, -1)
		}
		out[i] = tsValue{ts: partialKey.Start + rng.Int64N(int64(1+rng.IntN(60_000))), v: v}
	}
	return out
}

func partialOf(evs []tsValue) *Partial {
	p := NewPartial(partialKey, DefaultAccuracy)
	for _, e := range evs {
		p.Add(e.ts, e.v)
	}
	return p
}

func exactQuantile(evs []tsValue, q float64) float64 {
	v := make([]float64, len(evs))
	for i, e := range evs {
		v[i] = e.v
	}
	slices.Sort(v)
	return v[int(q*float64(len(v)-1))]
}

// requireSameWindow checks that two partials give the same result: count,
// sum, mean, min, max and last exactly, and the same sketch.
func requireSameWindow(t *testing.T, want, got *Partial, msg string) {
	t.Helper()
	w, g := want.Result(), got.Result()
	require.Equal(t, w.Count, g.Count, msg)
	require.Equal(t, math.Float64bits(w.Sum), math.Float64bits(g.Sum), "%s: sum %v, want %v", msg, g.Sum, w.Sum)
	require.Equal(t, w.Overflow, g.Overflow, msg)
	require.Equal(t, math.Float64bits(w.Mean), math.Float64bits(g.Mean), "%s: mean %v, want %v", msg, g.Mean, w.Mean)
	require.Equal(t, math.Float64bits(w.Min), math.Float64bits(g.Min), msg)
	require.Equal(t, math.Float64bits(w.Max), math.Float64bits(g.Max), msg)
	require.Equal(t, math.Float64bits(w.Last), math.Float64bits(g.Last), "%s: last %v, want %v", msg, g.Last, w.Last)
	require.Equal(t, w.LastTS, g.LastTS, msg)
	require.Equal(t, w.Sketch.AppendBinary(nil), g.Sketch.AppendBinary(nil), "%s: sketch", msg)
	require.Equal(t, [3]float64{w.P50, w.P95, w.P99}, [3]float64{g.P50, g.P95, g.P99}, msg)
}

// TestPartialMergeProperty: events split at random between partials, merged
// in a random order, give the partial of all the events — count, sum, min,
// max and last exactly, the same sketch, so quantiles within the sketch's
// accuracy of the exact ones and within [min, max].
func TestPartialMergeProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 21))
	for iter := range 400 {
		evs := randomEvents(rng, 1+rng.IntN(300))
		all := partialOf(evs)
		parts := make([][]tsValue, 2+rng.IntN(3))
		for _, e := range evs {
			i := rng.IntN(len(parts))
			parts[i] = append(parts[i], e)
		}
		var merged *Partial
		for _, i := range rng.Perm(len(parts)) {
			if len(parts[i]) == 0 {
				continue
			}
			p := partialOf(parts[i])
			p.Final = true
			if merged == nil {
				merged = p
				continue
			}
			require.NoError(t, merged.Merge(p))
		}
		msg := fmt.Sprintf("iteration %d", iter)
		requireSameWindow(t, all, merged, msg)
		require.True(t, merged.Final, "final when every part is")
		r := merged.Result()
		for q, got := range map[float64]float64{0.5: r.P50, 0.95: r.P95, 0.99: r.P99} {
			exact := exactQuantile(evs, q)
			require.LessOrEqual(t, math.Abs(got-exact), DefaultAccuracy*math.Abs(exact)*(1+1e-12), "p%v: %v, exact %v", q*100, got, exact)
			require.True(t, got >= r.Min && got <= r.Max, "p%v %v outside [%v, %v]", q*100, got, r.Min, r.Max)
		}
	}
}

// TestPartialMergeCommutes: A into B and B into A give the same bits, even
// for arbitrary values whose sums round and spill, so both nodes of a pair
// answer the same.
func TestPartialMergeCommutes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	rounds := 300
	if testing.Short() || raceEnabled {
		rounds = 60 // each round's sketches span up to 600 decades: slow under the race detector
	}
	for range rounds {
		a, b := NewPartial(partialKey, DefaultAccuracy), NewPartial(partialKey, DefaultAccuracy)
		for range 1 + rng.IntN(50) {
			v := rng.NormFloat64() * math.Pow(10, float64(rng.IntN(616)-308))
			ts := partialKey.Start + rng.Int64N(100)
			if rng.IntN(2) == 0 {
				a.Add(ts, v)
			} else {
				b.Add(ts, v)
			}
		}
		if a.Count == 0 || b.Count == 0 {
			continue
		}
		ab, ba := *a, *b
		ab.Sketch, ba.Sketch = a.Sketch.Clone(), b.Sketch.Clone()
		require.NoError(t, ab.Merge(b))
		require.NoError(t, ba.Merge(a))
		require.Equal(t, ab.AppendBinary(nil), ba.AppendBinary(nil))
		r := ab.Result()
		require.False(t, math.IsInf(r.Sum, 0) || math.IsNaN(r.Mean))
	}
}

func TestPartialMergeRefuses(t *testing.T) {
	a := partialOf([]tsValue{{partialKey.Start, 1}})
	b := partialOf([]tsValue{{partialKey.Start, 2}})
	b.DeviceID = "d2"
	require.ErrorIs(t, a.Merge(b), ErrPartialMismatch)
	c := NewPartial(partialKey, 0.02)
	c.Add(partialKey.Start, 3)
	require.ErrorIs(t, a.Merge(c), ErrAccuracyMismatch)
	require.Equal(t, uint64(1), a.Count, "unchanged on error")
	require.Equal(t, uint64(1), a.Sketch.Count())
}

// TestOpenPartialsMatchOpen: an engine's open partials give the results Open
// gives, and closed results merged from child windows agree with a Partial
// of the same events.
func TestOpenPartialsMatchOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	var closed []Result
	e, err := New(Options{Sizes: []time.Duration{time.Second, 5 * time.Second, 10 * time.Second}, AllowedLateness: 2 * time.Second,
		OnClose: func(r Result) { closed = append(closed, r) }})
	require.NoError(t, err)
	for i := range 2000 {
		dev := []string{"a", "b", "c"}[rng.IntN(3)]
		e.Add("s", dev, int64(i*7+rng.IntN(1500)), float64(rng.IntN(1000))-500)
	}
	open := e.Open("s", "*", 0, math.MinInt64, math.MaxInt64)
	parts := e.OpenPartials("s", "*", 0, math.MinInt64, math.MaxInt64)
	require.NotEmpty(t, open)
	require.Len(t, parts, len(open))
	got := make([]Result, len(parts))
	for i := range parts {
		got[i] = parts[i].Result()
	}
	slices.SortFunc(got, compareResults)
	for i := range open {
		open[i].Sketch, got[i].Sketch = nil, nil
	}
	require.Equal(t, open, got)
	for _, p := range e.OpenPartials("s", "a", 5*time.Second, math.MinInt64, math.MaxInt64) {
		require.Equal(t, "a", p.DeviceID)
		require.Equal(t, 5*time.Second, p.Size)
	}
	require.Empty(t, e.OpenPartials("s", "*", 3*time.Second, math.MinInt64, math.MaxInt64))
	require.Empty(t, e.OpenPartials("nope", "*", 0, math.MinInt64, math.MaxInt64))
	require.NotEmpty(t, closed)
}

func TestPartialCodec(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for range 200 {
		p := partialOf(randomEvents(rng, 1+rng.IntN(50)))
		p.Final = rng.IntN(2) == 0
		if rng.IntN(3) == 0 {
			p.DeviceID = ""
		}
		b := p.AppendBinary(nil)
		got, err := DecodePartial(b)
		require.NoError(t, err)
		require.Equal(t, b, got.AppendBinary(nil))
		require.Equal(t, p.Key, got.Key)
		requireSameWindow(t, p, &got, "decoded")
	}

	valid := partialOf([]tsValue{{partialKey.Start + 5, 2}, {partialKey.Start + 9, 4}})
	for name, corrupt := range map[string]func(*Partial) []byte{
		"trailing byte": func(p *Partial) []byte { return append(p.AppendBinary(nil), 0) },
		"truncated":     func(p *Partial) []byte { b := p.AppendBinary(nil); return b[:len(b)-1] },
		"unknown flag":  func(p *Partial) []byte { b := p.AppendBinary(nil); b[0] |= 0x80; return b },
		"count":         func(p *Partial) []byte { p.Count = 3; return p.AppendBinary(nil) },
		"last_ts":       func(p *Partial) []byte { p.LastTS = p.End(); return p.AppendBinary(nil) },
		"start":         func(p *Partial) []byte { p.Start++; p.LastTS++; return p.AppendBinary(nil) },
		"min above max": func(p *Partial) []byte { p.Min = 5; return p.AppendBinary(nil) },
		"infinite sum":  func(p *Partial) []byte { p.Sum = math.Inf(1); return p.AppendBinary(nil) },
		"NaN carry":     func(p *Partial) []byte { p.Over = math.NaN(); return p.AppendBinary(nil) },
		"empty device": func(p *Partial) []byte {
			b := p.AppendBinary(nil)
			return slices.Concat(b[:6], []byte{0}, b[6+1+len(p.DeviceID):])
		},
		"zero size": func(p *Partial) []byte { p.Size = time.Millisecond / 2; return p.AppendBinary(nil) },
	} {
		p := *valid
		p.Sketch = valid.Sketch.Clone()
		_, err := DecodePartial(corrupt(&p))
		require.ErrorIs(t, err, ErrCorruptPartial, name)
	}
}

func FuzzPartialDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		p := partialOf(randomEvents(rng, 1+rng.IntN(20)))
		p.Final = rng.IntN(2) == 0
		f.Add(p.AppendBinary(nil))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePartial(b)
		if err != nil {
			return
		}
		if got := p.AppendBinary(nil); !bytes.Equal(got, b) {
			t.Fatalf("decoded %x re-encodes to %x", b, got)
		}
		r := p.Result()
		if math.IsNaN(r.Mean) || math.IsInf(r.Sum, 0) || r.P50 < r.Min || r.P99 > r.Max {
			t.Fatalf("result of a decoded partial: %+v", r)
		}
	})
}
