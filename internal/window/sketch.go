package window

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"unsafe"
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
// highest bucket (up to 16 inline; the negative ones only once there is one),
// packed at one to eight bytes a count as the largest needs, so memory grows
// with log(max|v|/min|v|)/a: about 115 buckets per decade of magnitude at
// a = 1%, a byte each while no bucket holds more than 255 values.
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

// sketchData is a sketch without its mapping, as windows hold it. Most series
// are of one sign, so the negative buckets are allocated with the first
// negative value rather than held inline.
type sketchData struct {
	n    uint64 // total count
	zero uint64 // values with |v| < MinIndexable
	pos  store  // buckets of values ≥ MinIndexable
	neg  *store // buckets of |v| for values ≤ −MinIndexable; nil: none yet
}

// negs returns the negative buckets, noStore if there are none; the caller
// must not write through it.
func (s *sketchData) negs() *store {
	if s.neg == nil {
		return &noStore
	}
	return s.neg
}

// setNeg sets the negative buckets to st.
func (s *sketchData) setNeg(st store) {
	s.neg = nil
	if _, _, ok := st.bounds(); ok {
		s.neg = &st
	}
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
	if o.neg != nil {
		if s.neg == nil {
			s.neg = &store{}
		}
		s.neg.merge(o.neg)
	}
}

// Clone returns an independent copy of s.
func (s *Sketch) Clone() *Sketch {
	return &Sketch{m: s.m, sketchData: s.sketchData.clone()}
}

func (s *sketchData) clone() sketchData {
	c := *s
	c.pos = s.pos.clone()
	if s.neg != nil {
		neg := s.neg.clone()
		c.neg = &neg
	}
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
	if len(qs) == 0 {
		return
	}
	m := s.mapping()
	rank := func(j int) uint64 {
		// float64(n−1) may round up past n−1 (and to 2^64) for huge counts.
		if r := qs[j] * float64(s.n-1); r < float64(s.n-1) {
			return min(uint64(r), s.n-1)
		}
		return s.n - 1
	}
	// Bucket counts are added up in ascending order of value until they pass
	// next, the rank of qs[j]; then the bucket's value answers qs[j], and
	// every later q whose rank the sum also passes.
	j, next, cum := 0, rank(0), uint64(0)
	answer := func(v float64) {
		for j < len(qs) && next < cum {
			out[j] = v
			if j++; j < len(qs) {
				next = rank(j)
			}
		}
	}
	// Ascending order puts the most negative values first, so the negative
	// store runs from its highest index down.
	neg, pos := s.negs(), &s.pos
	nc, pc := neg.packed(), pos.packed()
	for i := neg.n - 1; i >= 0 && j < len(qs); i-- {
		if cum += nc.at(i); next < cum {
			answer(-m.value(neg.off + i))
		}
	}
	cum += s.zero
	answer(0)
	for i := int32(0); i < pos.n && j < len(qs); i++ {
		if cum += pc.at(i); next < cum {
			answer(m.value(pos.off + i))
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
		if s.neg == nil {
			s.neg = &store{}
		}
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

// A store's counts are packed into uint64 words, 8<<width bits each: a window
// of a few hundred values needs one byte per bucket, not eight. A count that
// outgrows its width widens every count of the store (widen), to the least
// width that holds it; widths only grow. Layout (off, n, width, inline or not)
// is never observable: quantiles and encodings read the counts alone.
const (
	maxWidth = 3 // 64-bit counts
	// smallWords is how many words of counts a store keeps inside itself:
	// 16 buckets of counts below 256, enough for a window of a steady signal
	// (±8% at 1% accuracy) to need no allocation and no second cache miss
	// per event.
	smallWords = 2
)

// laneMask[w] is the largest count of width w.
var laneMask = [maxWidth + 1]uint64{1<<8 - 1, 1<<16 - 1, 1<<32 - 1, math.MaxUint64}

// store counts values per bucket index, for buckets off … off+n−1, packed
// (8<<width bits a count) in small while they fit there, else in the
// wordsFor(n, width) words big points to. A store is a value: the inline counts
// move with it, big is shared by copies.
type store struct {
	off   int32
	n     int32
	width uint8
	big   *uint64
	small [smallWords]uint64
}

// noStore is the empty store that sketchData.negs returns for a sketch without
// negative values; it is never written.
var noStore store

// wordsFor returns how many words n counts of width w take.
func wordsFor(n int32, w uint8) int { return int((int64(n)<<w + 7) >> 3) }

// smallCap returns how many counts of width w fit in small.
func smallCap(w uint8) int32 { return smallWords * 8 >> w }

// words returns the words holding the counts; it aliases s.
func (s *store) words() []uint64 {
	if s.big == nil {
		return s.small[:]
	}
	return unsafe.Slice(s.big, wordsFor(s.n, s.width))
}

// lane returns the word index and bit shift of count j at width w.
func lane(j int32, w uint8) (int, uint) {
	return int(j >> (3 - w)), uint(j&(7>>w)) << (3 + w)
}

// count returns the count of bucket off+j, 0 ≤ j < n.
func (s *store) count(j int32) uint64 {
	k, sh := lane(j, s.width)
	return s.words()[k] >> sh & laneMask[s.width]
}

// packedCounts reads a store's counts in a loop over its buckets without
// finding its words and width again for each: closing a window reads
// every count of its sketch twice (quantiles, encoding).
type packedCounts struct {
	ws   []uint64
	w    uint8
	mask uint64
}

func (s *store) packed() packedCounts {
	return packedCounts{ws: s.words(), w: s.width, mask: laneMask[s.width]}
}

// at returns the count of bucket off+j, 0 ≤ j < n.
func (p packedCounts) at(j int32) uint64 {
	return p.ws[j>>(3-p.w)] >> (uint(j&(7>>p.w)) << (3 + p.w)) & p.mask
}

// each calls f with j and the count of bucket off+j for every non-empty
// bucket, in ascending order; it passes over words of empty buckets whole,
// as a sketch of values over many magnitudes has mostly empty buckets.
func (p packedCounts) each(n int32, f func(j int32, c uint64)) {
	per := int32(8 >> p.w)
	for k, wd := range p.ws {
		if wd == 0 {
			continue
		}
		base := int32(k) * per
		for j := base; j < base+per && j < n; j++ {
			if c := wd >> (uint(j-base) << (3 + p.w)) & p.mask; c != 0 {
				f(j, c)
			}
		}
	}
}

// counts returns a copy of the counts of buckets off … off+n−1.
func (s *store) counts() []uint64 {
	out := make([]uint64, s.n)
	p := s.packed()
	for j := range s.n {
		out[j] = p.at(j)
	}
	return out
}

func (s *store) add(i int32) {
	if j := i - s.off; uint32(j) < uint32(s.n) {
		k, sh := lane(j, s.width)
		ws := s.words()
		if ws[k]>>sh&laneMask[s.width] != laneMask[s.width] {
			ws[k] += 1 << sh
			return
		}
		s.inc(j, 1)
		return
	}
	s.grow(i, i)
	s.inc(i-s.off, 1)
}

// inc adds c to the count of bucket off+j, 0 ≤ j < n, widening the counts if
// the sum does not fit their width. The sum itself must fit in a uint64.
func (s *store) inc(j int32, c uint64) {
	k, sh := lane(j, s.width)
	old := s.words()[k] >> sh & laneMask[s.width]
	if c > laneMask[s.width]-old {
		s.widen(old + c)
		k, sh = lane(j, s.width)
	}
	s.words()[k] += c << sh
}

// widen repacks the counts at the least width that holds v.
func (s *store) widen(v uint64) {
	w := s.width + 1
	for v > laneMask[w] {
		w++
	}
	s.repack(s.off, s.n, w, s.big != nil || wordsFor(s.n, w) > smallWords)
}

// repack moves the counts to cover buckets off … off+n−1 (which must hold all
// non-empty ones) at width w, in newly allocated words if big, else in small.
func (s *store) repack(off, n int32, w uint8, big bool) {
	old := *s
	var ws []uint64
	if big {
		ws = make([]uint64, wordsFor(n, w))
		s.big = &ws[0]
		s.small = [smallWords]uint64{}
	} else {
		s.big = nil
		s.small = [smallWords]uint64{}
		ws = s.small[:]
	}
	s.off, s.n, s.width = off, n, w
	oc := old.packed()
	for j := range old.n {
		if c := oc.at(j); c != 0 {
			k, sh := lane(old.off+j-off, w)
			ws[k] |= c << sh
		}
	}
}

// grow makes the store cover [lo, hi] besides its non-empty buckets. Out of
// small it leaves slack on the side it grows, so that a drifting series
// reallocates rarely.
func (s *store) grow(lo, hi int32) {
	oldLo, oldN := s.off, s.n
	if nlo, nhi, ok := s.bounds(); ok {
		lo, hi = min(lo, nlo), max(hi, nhi)
	}
	span := hi - lo + 1
	if c := smallCap(s.width); s.big == nil && span <= c {
		s.repack(lo-(c-span)/2, c, s.width, false)
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
	s.repack(newLo, newHi-newLo+1, s.width, true)
}

func (s *store) merge(o *store) {
	lo, hi, ok := o.bounds()
	if !ok {
		return
	}
	if lo < s.off || hi >= s.off+s.n {
		s.grow(lo, hi)
	}
	oc := o.packed()
	for j := lo - o.off; j <= hi-o.off; j++ {
		if c := oc.at(j); c != 0 {
			s.inc(o.off+j-s.off, c)
		}
	}
}

// clone returns a copy of s that shares nothing with it.
func (s *store) clone() store {
	c := *s
	if s.big != nil {
		ws := slices.Clone(s.words())
		c.big = &ws[0]
	}
	return c
}

// bounds returns the lowest and highest index with a non-zero count.
func (s *store) bounds() (lo, hi int32, ok bool) {
	first, last := int32(-1), int32(-1)
	for k, wd := range s.words() {
		if wd == 0 {
			continue
		}
		for j := int32(k) << (3 - s.width); j < int32(k+1)<<(3-s.width) && j < s.n; j++ {
			if s.count(j) != 0 {
				if first < 0 {
					first = j
				}
				last = j
			}
		}
	}
	if first < 0 {
		return 0, 0, false
	}
	return s.off + first, s.off + last, true
}
