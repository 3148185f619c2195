package window

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Accuracy bounds of a Sketch. Below MinAccuracy a sketch spanning the whole
// float64 range would need millions of buckets.
const (
	DefaultAccuracy = 0.01
	MinAccuracy     = 0.001
	MaxAccuracy     = 0.5
)

// MinIndexable is the smallest magnitude a Sketch tells apart from zero: the
// smallest normal float64, 2^-1022. Subnormal values (and ±0) are counted in the
// zero bucket and reported as 0, an absolute error below 2.3e-308. Subnormals
// are excluded because they lack the precision to represent a bucket to
// within 1%.
const MinIndexable = 0x1p-1022

// ErrAccuracyMismatch is returned by Merge for sketches of different accuracy.
var ErrAccuracyMismatch = errors.New("window: cannot merge sketches of different accuracy")

// Sketch is a mergeable quantile sketch with a relative-error guarantee, after
// DDSketch (Masson, Rim, Lee; VLDB 2019).
//
// With a = accuracy and γ = (1+a)/(1−a), a positive value v ≥ MinIndexable falls
// in bucket i = ⌈log_γ v⌉, which covers (γ^(i−1), γ^i] and is represented by
// 2γ^i/(γ+1), within relative error a of every value in it. Negative values use
// a second set of buckets on |v|; values with |v| < MinIndexable are counted in a
// zero bucket. The counts of each sign are kept densely from its lowest to its
// highest bucket (a few inline), so memory grows with log(max|v|/min|v|)/a:
// about 115 buckets per decade of magnitude at a = 1%.
//
// Quantile guarantee: let n = Count() > 0, q ∈ [0,1] and x the element of rank
// ⌊q·(n−1)⌋ (0-based, rank computed in float64) of the added values sorted
// ascending. Then Quantile(q) returns r with |r − x| ≤ a·|x| if |x| ≥
// MinIndexable, and r = 0 otherwise; "≤" holds up to floating-point rounding in
// the logarithm and exponential, a relative 1e-12 at most. The guarantee holds
// for merged sketches with respect to the union of their values, and for every q:
// nothing is ever collapsed.
//
// Values are meant to be finite. A NaN is counted in the zero bucket and ±Inf in
// the bucket of ±MaxFloat64, so no input makes a Sketch panic.
//
// The zero Sketch is an empty sketch of DefaultAccuracy. A Sketch is not safe for
// concurrent use.
type Sketch struct {
	m *mapping // nil means the DefaultAccuracy mapping
	sketchData
}

// sketchData is a sketch without its mapping, as windows hold it.
type sketchData struct {
	n    uint64 // total count
	zero uint64 // values with |v| < MinIndexable
	pos  store  // buckets of values ≥ MinIndexable
	neg  store  // buckets of |v| for values ≤ −MinIndexable
}

// NewSketch returns an empty sketch of the given relative accuracy. It panics if
// accuracy is not in [MinAccuracy, MaxAccuracy]: accuracies come from validated
// options, so anything else is a programming error.
func NewSketch(accuracy float64) *Sketch {
	m, err := newMapping(accuracy)
	if err != nil {
		panic(err)
	}
	return &Sketch{m: m}
}

// Accuracy returns the relative accuracy the sketch guarantees.
func (s *Sketch) Accuracy() float64 { return s.mapping().accuracy }

// Count returns the number of values added (merged sketches included).
func (s *Sketch) Count() uint64 { return s.n }

// Add adds one value.
func (s *Sketch) Add(v float64) { s.addBucket(s.mapping().bucketOf(v)) }

// Merge adds every value of o to s. Both must have the same accuracy; o is not
// changed. Merging is exact: the result equals the sketch of the union.
func (s *Sketch) Merge(o *Sketch) error {
	if s.mapping().accuracy != o.mapping().accuracy {
		return fmt.Errorf("%w: %v and %v", ErrAccuracyMismatch, s.Accuracy(), o.Accuracy())
	}
	if s.n > math.MaxUint64-o.n {
		return errors.New("window: merged sketch count overflows uint64")
	}
	s.sketchData.merge(&o.sketchData)
	return nil
}

func (s *sketchData) merge(o *sketchData) {
	s.n += o.n
	s.zero += o.zero
	s.pos.merge(&o.pos)
	s.neg.merge(&o.neg)
}

// Clone returns an independent copy of s.
func (s *Sketch) Clone() *Sketch {
	return &Sketch{m: s.m, sketchData: s.sketchData.clone()}
}

func (s *sketchData) clone() sketchData {
	c := *s
	c.pos.big = slices.Clone(s.pos.big)
	c.neg.big = slices.Clone(s.neg.big)
	return c
}

// Quantile returns an estimate of the q-quantile within the guarantee stated on
// Sketch. It returns NaN for an empty sketch and for q outside [0,1].
func (s *Sketch) Quantile(q float64) float64 {
	if s.n == 0 || !(q >= 0 && q <= 1) {
		return math.NaN()
	}
	var out [1]float64
	s.quantiles([]float64{q}, out[:])
	return out[0]
}

// quantiles sets out[j] to Quantile(qs[j]) in one pass over the buckets. The
// sketch must not be empty and qs must be sorted ascending within [0,1].
func (s *Sketch) quantiles(qs []float64, out []float64) {
	m := s.mapping()
	j := 0
	rank := func() uint64 {
		// float64(n−1) may round up past n−1 (and to 2^64) for huge counts.
		if r := qs[j] * float64(s.n-1); r < float64(s.n-1) {
			return min(uint64(r), s.n-1)
		}
		return s.n - 1
	}
	var cum uint64
	// Ascending order puts the most negative values first, so the negative
	// store runs from its highest index down.
	neg, pos := s.neg.counts(), s.pos.counts()
	for i := len(neg) - 1; i >= 0 && j < len(qs); i-- {
		cum += neg[i]
		for ; j < len(qs) && rank() < cum; j++ {
			out[j] = -m.value(s.neg.off + int32(i))
		}
	}
	cum += s.zero
	for ; j < len(qs) && rank() < cum; j++ {
		out[j] = 0
	}
	for i := 0; i < len(pos) && j < len(qs); i++ {
		cum += pos[i]
		for ; j < len(qs) && rank() < cum; j++ {
			out[j] = m.value(s.pos.off + int32(i))
		}
	}
	if j < len(qs) {
		panic("window: sketch bucket counts do not add up to its count")
	}
}

func (s *Sketch) mapping() *mapping {
	if s.m == nil {
		return defaultMapping
	}
	return s.m
}

// addBucket counts one value already mapped to b.
func (s *sketchData) addBucket(b bucket) {
	s.n++
	switch {
	case b > 0:
		s.pos.add(int32(b - bucketBias))
	case b < 0:
		s.neg.add(int32(-b - bucketBias))
	default:
		s.zero++
	}
}

// bucket is a value's place in a sketch, computed once per event and reused for
// every window: 0 for the zero bucket, bucketBias+i for positive bucket i and
// −(bucketBias+i) for negative bucket i. The bias keeps the three cases apart
// since bucket indexes themselves may be ≤ 0.
type bucket int64

const bucketBias = 1 << 32

// mapping is the value ↔ bucket index mapping for one accuracy.
type mapping struct {
	accuracy float64
	mult     float64 // 1/log2 γ
	lnGamma  float64
	rep      float64 // 2/(1+γ): a bucket's representative over γ^i
	minIdx   int32   // index of MinIndexable
	maxIdx   int32   // index of MaxFloat64
}

var defaultMapping, _ = newMapping(DefaultAccuracy)

func newMapping(accuracy float64) (*mapping, error) {
	if !(accuracy >= MinAccuracy && accuracy <= MaxAccuracy) {
		return nil, fmt.Errorf("window: sketch accuracy %v is outside [%v, %v]", accuracy, MinAccuracy, MaxAccuracy)
	}
	gamma := (1 + accuracy) / (1 - accuracy)
	m := &mapping{accuracy: accuracy, lnGamma: math.Log(gamma), rep: 2 / (1 + gamma)}
	m.mult = math.Ln2 / m.lnGamma
	m.minIdx = m.rawIndex(MinIndexable)
	m.maxIdx = m.rawIndex(math.MaxFloat64)
	return m, nil
}

func (m *mapping) rawIndex(v float64) int32 {
	return int32(math.Ceil(log2(v) * m.mult))
}

// log2 returns log2(v) for a normal v > 0 within about an ulp of the result
// (absolute error < 2e-13), as good as math.Log2 here and several times
// faster. With
// v = 2^e·m, m ∈ [1,2) split as c·(1+r), c the midpoint of m's 1/256th of
// [1,2): log2 v = e + log2 c + log2(1+r), |r| < 2^-9, the last by four terms
// of its series (truncation error < 2^-45/5·log2 e).
func log2(v float64) float64 {
	b := math.Float64bits(v)
	e := int64(b>>52) - 1023
	k := b >> 44 & 0xff
	m := math.Float64frombits(b&(1<<52-1) | 1023<<52)
	r := m*log2Tab[k].inv - 1
	p := r * (1 - r*(0.5-r*(1.0/3-r*0.25)))
	return float64(e) + log2Tab[k].log2 + p*math.Log2E
}

// log2Tab holds, for the midpoints c = 1 + (k+½)/256 of [1,2), 1/c and log2 c.
var log2Tab = func() (t [256]struct{ inv, log2 float64 }) {
	for k := range t {
		c := 1 + (float64(k)+0.5)/256
		t[k].inv, t[k].log2 = 1/c, math.Log2(c)
	}
	return t
}()

// index returns the bucket index of a magnitude a ≥ MinIndexable.
func (m *mapping) index(a float64) int32 {
	i := m.rawIndex(a)
	// Guard against a non-monotone rounding at the very ends of the range, so
	// indexes always lie in [minIdx, maxIdx] (the decoder relies on it).
	return min(max(i, m.minIdx), m.maxIdx)
}

func (m *mapping) bucketOf(v float64) bucket {
	switch {
	case v >= MinIndexable:
		return bucket(int64(m.index(min(v, math.MaxFloat64))) + bucketBias)
	case v <= -MinIndexable:
		return -bucket(int64(m.index(min(-v, math.MaxFloat64))) + bucketBias)
	default: // includes NaN
		return 0
	}
}

// value returns the representative 2γ^i/(γ+1) of bucket i, clamped to
// MaxFloat64 (clamping only moves it closer to the values of the bucket). It
// computes γ^i as 2^(i·log2 γ) split into a power of two and a fraction
// because math.Exp overflows early on amd64 (above about 709.4).
func (m *mapping) value(i int32) float64 {
	t := float64(i) / m.mult
	k := math.Floor(t)
	return min(math.Ldexp(math.Exp2(t-k)*m.rep, int(k)), math.MaxFloat64)
}

// smallBuckets is how many bucket counts a store keeps inside itself, enough
// for a window of a steady signal (±2% at 1% accuracy) to need no allocation
// and no second cache miss per event.
const smallBuckets = 4

// store counts values per bucket index, for buckets off … off+n−1: in small
// while n ≤ smallBuckets, else in big (len(big) == n). A store is a value: the
// inline counts move with it, big is shared by copies.
type store struct {
	off   int32
	n     int32
	small [smallBuckets]uint64
	big   []uint64
}

// counts returns the counts of buckets off … off+n−1; it aliases s.
func (s *store) counts() []uint64 {
	if s.big != nil {
		return s.big
	}
	return s.small[:s.n]
}

func (s *store) add(i int32) {
	if j := uint32(i - s.off); j < uint32(s.n) {
		if s.big == nil {
			s.small[j]++
		} else {
			s.big[j]++
		}
		return
	}
	s.grow(i, i)
	s.counts()[i-s.off]++
}

// grow makes the store cover [lo, hi] besides its non-empty buckets. Out of
// small it leaves slack on the side it grows, so that a drifting series
// reallocates rarely.
func (s *store) grow(lo, hi int32) {
	old, oldLo, oldN := s.counts(), s.off, s.n
	if nlo, nhi, ok := s.bounds(); ok {
		lo, hi = min(lo, nlo), max(hi, nhi)
	}
	span := hi - lo + 1
	if s.big == nil && span <= smallBuckets {
		var c [smallBuckets]uint64
		off := lo - (smallBuckets-span)/2
		for j, v := range old {
			if v != 0 {
				c[oldLo+int32(j)-off] = v
			}
		}
		s.small, s.off, s.n = c, off, smallBuckets
		return
	}
	slack := span/2 + 2
	newLo, newHi := lo, hi
	if oldN == 0 || lo < oldLo {
		newLo -= slack
	}
	if oldN == 0 || hi > oldLo+oldN-1 {
		newHi += slack
	}
	big := make([]uint64, newHi-newLo+1)
	for j, v := range old {
		if v != 0 {
			big[oldLo+int32(j)-newLo] = v
		}
	}
	s.small = [smallBuckets]uint64{}
	s.big, s.off, s.n = big, newLo, int32(len(big))
}

func (s *store) merge(o *store) {
	lo, hi, ok := o.bounds()
	if !ok {
		return
	}
	if lo < s.off || hi >= s.off+s.n {
		s.grow(lo, hi)
	}
	dst := s.counts()
	for j, c := range o.counts() {
		if c != 0 {
			dst[o.off+int32(j)-s.off] += c
		}
	}
}

// bounds returns the lowest and highest index with a non-zero count.
func (s *store) bounds() (lo, hi int32, ok bool) {
	first, last := -1, -1
	for j, c := range s.counts() {
		if c != 0 {
			if first < 0 {
				first = j
			}
			last = j
		}
	}
	if first < 0 {
		return 0, 0, false
	}
	return s.off + int32(first), s.off + int32(last), true
}
