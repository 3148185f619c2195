package window

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// distributions the accuracy tests run over; each returns n values.
var distributions = map[string]func(rng *rand.Rand, n int) []float64{
	"uniform": func(rng *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return 20 + 10*rng.Float64() })
	},
	"lognormal wide": func(rng *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return math.Exp(8 * rng.NormFloat64()) })
	},
	"normal around zero": func(rng *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return rng.NormFloat64() })
	},
	"negative only": func(rng *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return -math.Exp(3 * rng.NormFloat64()) })
	},
	"mixed signs with zeros and repeats": func(rng *rand.Rand, n int) []float64 {
		return fill(n, func() float64 {
			switch rng.IntN(4) {
			case 0:
				return 0
			case 1:
				return -2.5
			default:
				return 100 * (rng.Float64() - 0.5)
			}
		})
	},
	"extremes": func(rng *rand.Rand, n int) []float64 {
		// Huge, tiny normal, subnormal and zero magnitudes of both signs.
		pool := []float64{math.MaxFloat64, -math.MaxFloat64, 1e300, -1e-300, 0x1p-1022, -0x1p-1022,
			5e-324, -1e-310, 0, 1, -1, 1e-9, 3e9}
		return fill(n, func() float64 { return pool[rng.IntN(len(pool))] * (1 - rng.Float64()/4) })
	},
	"constant": func(rng *rand.Rand, n int) []float64 {
		return fill(n, func() float64 { return 21.5 })
	},
}

func fill(n int, f func() float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = f()
	}
	return v
}

// quantileGrid holds the q checked, the ends and the reported ones included.
var quantileGrid = []float64{0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1}

func TestSketchAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for name, dist := range distributions {
		for _, a := range []float64{MinAccuracy, 0.01, 0.05, MaxAccuracy} {
			for _, n := range []int{1, 2, 3, 10, 1000, 10000} {
				vals := dist(rng, n)
				s := NewSketch(a)
				for _, v := range vals {
					s.Add(v)
				}
				require.Equal(t, uint64(n), s.Count())
				slices.Sort(vals)
				for _, q := range append(slices.Clone(quantileGrid), rng.Float64()) {
					x := vals[int(q*float64(n-1))]
					requireWithin(t, a, x, s.Quantile(q), "%s a=%v n=%d q=%v", name, a, n, q)
				}
			}
		}
	}
}

func TestSketchEdges(t *testing.T) {
	s := NewSketch(0.01)
	require.True(t, math.IsNaN(s.Quantile(0.5)), "empty sketch")
	s.Add(1)
	for _, q := range []float64{-0.1, 1.1, math.NaN(), math.Inf(1)} {
		require.True(t, math.IsNaN(s.Quantile(q)), "q=%v", q)
	}
	require.Equal(t, 0.01, s.Accuracy())

	// Non-finite values do not panic: NaN counts as zero, ±Inf as ±MaxFloat64.
	s = NewSketch(0.01)
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		s.Add(v)
	}
	require.Equal(t, uint64(3), s.Count())
	require.InEpsilon(t, -math.MaxFloat64, s.Quantile(0), 0.011)
	require.Equal(t, 0.0, s.Quantile(0.5))
	require.InEpsilon(t, math.MaxFloat64, s.Quantile(1), 0.011)
	require.False(t, math.IsInf(s.Quantile(1), 0))

	// The zero Sketch works, with the default accuracy.
	var z Sketch
	z.Add(10)
	require.Equal(t, DefaultAccuracy, z.Accuracy())
	requireWithin(t, DefaultAccuracy, 10, z.Quantile(0.5), "zero sketch")

	require.Panics(t, func() { NewSketch(0) })
	require.Panics(t, func() { NewSketch(0.9) })
}

// TestSketchBucketIndexes pins the mapping: the index of v is ⌈log_γ v⌉ as
// computed with math.Log, except within rounding of a bucket boundary.
func TestSketchBucketIndexes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, a := range []float64{MinAccuracy, 0.01, MaxAccuracy} {
		m, err := newMapping(a)
		require.NoError(t, err)
		for range 200_000 {
			v := math.Float64frombits(rng.Uint64() &^ (1 << 63))
			if !(v >= MinIndexable && v <= math.MaxFloat64) {
				continue
			}
			exact := math.Log(v) / m.lnGamma
			got := m.index(v)
			if want := int32(math.Ceil(exact)); got != want {
				// Only allowed when exact is within rounding of an integer.
				require.InDelta(t, math.Round(exact), exact, 1e-9, "v=%v a=%v: index %d, want %d", v, a, got, want)
			}
			requireWithin(t, a, v, m.value(got), "v=%v a=%v", v, a)
		}
		require.Equal(t, m.minIdx, m.index(MinIndexable))
		require.Equal(t, m.maxIdx, m.index(math.MaxFloat64))
	}
}

func TestLog2(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	check := func(v, tol float64) {
		if d := math.Abs(log2(v) - math.Log2(v)); !(d <= tol) {
			t.Fatalf("log2(%v) = %v, math.Log2 %v: off by %v", v, log2(v), math.Log2(v), d)
		}
	}
	for range 300_000 {
		if v := math.Float64frombits(rng.Uint64() &^ (1 << 63)); v >= MinIndexable && v <= math.MaxFloat64 {
			check(v, 2e-13) // results up to 1024: an ulp is 2.3e-13
		}
		check(math.Exp(20*(rng.Float64()-0.5)), 1e-14)
	}
	for _, v := range []float64{1, 2, 0.5, 1024, 1.5, 0x1p-1022, math.MaxFloat64} {
		check(v, 1e-13)
	}
}

func TestSketchMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	for name, dist := range distributions {
		vals := dist(rng, 5000)
		whole := NewSketch(0.02)
		parts := []*Sketch{NewSketch(0.02), NewSketch(0.02), NewSketch(0.02), NewSketch(0.02)}
		for i, v := range vals {
			whole.Add(v)
			parts[i*7%len(parts)].Add(v)
		}
		merged := NewSketch(0.02)
		for _, p := range parts {
			require.NoError(t, merged.Merge(p))
		}
		require.NoError(t, merged.Merge(NewSketch(0.02)), "an empty sketch")
		requireSameSketch(t, whole, merged, name)
		for _, q := range quantileGrid {
			require.Equal(t, whole.Quantile(q), merged.Quantile(q), "%s q=%v", name, q)
		}
	}
	err := NewSketch(0.01).Merge(NewSketch(0.02))
	require.ErrorIs(t, err, ErrAccuracyMismatch)
	require.EqualError(t, err, "window: cannot merge sketches of different accuracy: 0.01 and 0.02")
}

// requireSameSketch checks that two sketches hold the same buckets, through
// their canonical encodings.
func requireSameSketch(t *testing.T, want, got *Sketch, msg string) {
	t.Helper()
	wb, err := want.MarshalBinary()
	require.NoError(t, err)
	gb, err := got.MarshalBinary()
	require.NoError(t, err)
	require.Equal(t, wb, gb, msg)
	require.Equal(t, want.Count(), got.Count(), msg)
}

func TestSketchClone(t *testing.T) {
	s := NewSketch(0.01)
	for i := range 100 {
		s.Add(float64(i*i) - 50) // wide enough to leave the inline buckets
	}
	c := s.Clone()
	requireSameSketch(t, s, c, "clone")
	c.Add(1e6)
	require.Equal(t, uint64(100), s.Count(), "the clone shares nothing")
	require.NotEqual(t, s.Quantile(1), c.Quantile(1))
}

func TestSketchMarshalRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	sketches := []*Sketch{new(Sketch), NewSketch(MinAccuracy), NewSketch(MaxAccuracy)}
	for _, dist := range distributions {
		for _, n := range []int{1, 5, 3000} {
			s := NewSketch([]float64{0.001, 0.01, 0.2}[rng.IntN(3)])
			for _, v := range dist(rng, n) {
				s.Add(v)
			}
			sketches = append(sketches, s)
		}
	}
	for _, s := range sketches {
		b, err := s.MarshalBinary()
		require.NoError(t, err)
		var d Sketch
		require.NoError(t, d.UnmarshalBinary(b))
		requireSameSketch(t, s, &d, "round trip")
		require.Equal(t, s.Accuracy(), d.Accuracy())
		for _, q := range quantileGrid {
			want, got := s.Quantile(q), d.Quantile(q)
			require.True(t, want == got || math.IsNaN(want) && math.IsNaN(got), "q=%v", q)
		}
		require.Equal(t, b, d.AppendBinary(nil))
	}
	// Compactness: a steady signal costs a few bytes per bucket.
	s := NewSketch(0.01)
	for i := range 60 {
		s.Add(21 + float64(i%10)/10)
	}
	b, _ := s.MarshalBinary()
	require.Less(t, len(b), 24, "%d bytes", len(b))
}

func TestSketchUnmarshalErrors(t *testing.T) {
	good := NewSketch(0.01)
	good.Add(-3)
	good.Add(0)
	good.Add(5)
	good.Add(7)
	valid, _ := good.MarshalBinary()
	header := func(acc float64) []byte {
		return binary.LittleEndian.AppendUint64([]byte{sketchVersion}, math.Float64bits(acc))
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	m, _ := newMapping(0.01)
	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":            {nil, "truncated"},
		"bad version":      {cat([]byte{2}, valid[1:]), "unknown version 2"},
		"short accuracy":   {valid[:5], "truncated"},
		"accuracy NaN":     {cat(header(math.NaN()), []byte{0, 0, 0}), "accuracy NaN"},
		"accuracy too low": {cat(header(0.0001), []byte{0, 0, 0}), "accuracy 0.0001"},
		"truncated store":  {valid[:len(valid)-1], "truncated varint"},
		"trailing bytes":   {cat(valid, []byte{0}), "1 trailing bytes"},
		"too many buckets": {cat(header(0.01), []byte{0, 0, 100, 2, 1}), "100 buckets in 2 bytes"},
		"empty bucket":     {cat(header(0.01), []byte{0, 0, 1, 2, 0}), "empty bucket 1"},
		"zero gap":         {cat(header(0.01), []byte{0, 0, 2, 2, 1, 0, 1}), "gap 0"},
		"overlong varint":  {cat(header(0.01), []byte{0x80, 0x00, 0, 0}), "not minimally encoded"},
		"varint overflow":  {cat(header(0.01), bytes.Repeat([]byte{0xff}, 11)), "overflows 64 bits"},
		"index too high": {cat(header(0.01), []byte{0, 0, 1},
			binary.AppendVarint(nil, int64(m.maxIdx)+1), []byte{1}), "outside"},
		"index too low": {cat(header(0.01), []byte{0, 0, 1},
			binary.AppendVarint(nil, int64(m.minIdx)-1), []byte{1}), "outside"},
		"count overflow": {cat(header(0.01), binary.AppendUvarint(nil, math.MaxUint64), []byte{0, 1, 2},
			binary.AppendUvarint(nil, 1)), "overflows uint64"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := NewSketch(0.05)
			s.Add(1)
			err := s.UnmarshalBinary(c.data)
			require.ErrorIs(t, err, ErrCorruptSketch)
			require.ErrorContains(t, err, c.want)
			require.Equal(t, 0.05, s.Accuracy(), "unchanged on error")
			require.Equal(t, uint64(1), s.Count(), "unchanged on error")
		})
	}
}

// FuzzSketchUnmarshal feeds arbitrary bytes to the decoder: it must never
// panic, and whatever it accepts must be canonical (encode back to the same
// bytes) and usable.
func FuzzSketchUnmarshal(f *testing.F) {
	rng := rand.New(rand.NewPCG(17, 17))
	for _, name := range []string{"uniform", "mixed signs with zeros and repeats", "extremes", "constant"} {
		s := NewSketch(0.01)
		for _, v := range distributions[name](rng, 50) {
			s.Add(v)
		}
		b, _ := s.MarshalBinary()
		f.Add(b)
	}
	empty, _ := new(Sketch).MarshalBinary()
	f.Add(empty)
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s Sketch
		if err := s.UnmarshalBinary(data); err != nil {
			require.ErrorIs(t, err, ErrCorruptSketch)
			return
		}
		out, err := s.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, data, out, "accepted bytes are canonical")
		var sum uint64
		for _, c := range append(s.pos.counts(), s.negs().counts()...) {
			sum += c
		}
		require.Equal(t, s.Count(), sum+s.zero)
		prev := math.Inf(-1)
		for _, q := range quantileGrid {
			v := s.Quantile(q)
			if s.Count() == 0 {
				require.True(t, math.IsNaN(v))
				continue
			}
			require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "q=%v: %v", q, v)
			require.GreaterOrEqual(t, v, prev, "quantiles do not decrease")
			prev = v
		}
		c := s.Clone()
		if s.Count() > math.MaxUint64/2 {
			require.Error(t, c.Merge(&s), "the count would overflow")
			return
		}
		require.NoError(t, c.Merge(&s))
		require.Equal(t, 2*s.Count(), c.Count())
		c.Add(1)
	})
}
