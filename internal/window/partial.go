package window

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Key names a window: its stream, device ("" for the site-wide window), size
// and start (Unix ms, a multiple of the size).
type Key struct {
	Stream   string
	DeviceID string
	Size     time.Duration
	Start    int64
}

// End is the window's end, Unix ms, exclusive.
func (k Key) End() int64 { return k.Start + k.Size.Milliseconds() }

// CompareKeys orders windows by end descending, then size ascending, stream,
// device id ("" first): the order in which an active-active pair pages through
// its windows (docs/format/peer-windows.md), most recent first.
func CompareKeys(a, b Key) int {
	return cmp.Or(
		cmp.Compare(b.End(), a.End()),
		cmp.Compare(a.Size, b.Size),
		strings.Compare(a.Stream, b.Stream),
		strings.Compare(a.DeviceID, b.DeviceID),
	)
}

// Partial is the mergeable state of one window: what two nodes that each saw
// some of a window's events exchange so that either can answer the window of
// all of them (docs/format/peer-windows.md). Merge gives exactly the Partial
// of the union of the events; Result gives what a query shows.
type Partial struct {
	Key
	Final bool // the window has closed
	Count uint64
	// The values add up to Sum + Over·2^128 (in float64 additions, grouped as
	// the window engine groups them): Over is 0 until a sum would overflow
	// float64, then it carries the sum so far scaled down, exactly, and Sum
	// starts again (window-state.md, over).
	Sum, Over float64
	Min, Max  float64
	Last      float64 // the value with the latest event time
	LastTS    int64   // event time of Last
	Sketch    *Sketch // the values' quantile sketch; Count values
}

// Errors of Partial.
var (
	// ErrCorruptPartial is wrapped by DecodePartial's errors.
	ErrCorruptPartial = errors.New("window: corrupt partial encoding")
	// ErrPartialMismatch is returned by Merge for partials of different
	// windows.
	ErrPartialMismatch = errors.New("window: merging partials of different windows")
)

// NewPartial returns the empty partial of window k with a sketch of the given
// accuracy; it panics on an accuracy outside [MinAccuracy, MaxAccuracy], as
// NewSketch does. Add values to it; Result needs at least one.
func NewPartial(k Key, accuracy float64) *Partial {
	return &Partial{Key: k, Min: math.Inf(1), Max: math.Inf(-1), LastTS: math.MinInt64, Sketch: NewSketch(accuracy)}
}

// Add adds one finite value with event time ts. Of values with equal event
// times the larger is last, whatever the order they are added in, as in Merge.
func (p *Partial) Add(ts int64, v float64) {
	w := window{sum: p.Sum, over: p.Over}
	w.addSum(v)
	p.Sum, p.Over = w.sum, w.over
	p.Count++
	p.Min, p.Max = min(p.Min, v), max(p.Max, v)
	if ts > p.LastTS || ts == p.LastTS && above(v, p.Last) {
		p.Last, p.LastTS = v, ts
	}
	p.Sketch.Add(v)
}

// above reports whether a comes after b in the total order of float64 values
// where −0 is below +0.
func above(a, b float64) bool {
	return a > b || a == b && math.Signbit(b) && !math.Signbit(a)
}

// Merge adds o's events to p: count, min and max exactly, the sums as the
// engine adds a closed child window's, last the value with the later event
// time (of equal times the larger), the sketches bucket by bucket. p is
// final only if both were. Merging o into p and p into o give the same
// result. p's Sketch is changed; o is not. On error p is unchanged: o is a
// different window (ErrPartialMismatch) or its sketch has another accuracy
// (ErrAccuracyMismatch).
func (p *Partial) Merge(o *Partial) error {
	if p.Key != o.Key {
		return fmt.Errorf("%w: %v and %v", ErrPartialMismatch, p.Key, o.Key)
	}
	if err := p.Sketch.Merge(o.Sketch); err != nil {
		return err
	}
	p.Count += o.Count
	// Add the sums in an order that does not depend on which is p: floating
	// point addition commutes, but the spill into Over keeps one operand and
	// scales the other.
	a, b := p, o
	if cmp.Or(cmp.Compare(a.Sum, b.Sum), cmp.Compare(a.Over, b.Over)) > 0 {
		a, b = b, a
	}
	w := window{sum: a.Sum, over: a.Over}
	w.addSum(b.Sum)
	w.over += b.Over
	p.Sum, p.Over = w.sum, w.over
	p.Min, p.Max = min(p.Min, o.Min), max(p.Max, o.Max)
	if o.LastTS > p.LastTS || o.LastTS == p.LastTS && above(o.Last, p.Last) {
		p.Last, p.LastTS = o.Last, o.LastTS
	}
	p.Final = p.Final && o.Final
	return nil
}

// Result returns the window's result as a query shows it: the mean and the
// saturated sum as Engine results have them, P50, P95 and P99 from the sketch
// clamped to [Min, Max], and a copy of the sketch. p must hold a value.
func (p *Partial) Result() Result {
	w := window{sum: p.Sum, over: p.Over, min: p.Min, max: p.Max, sk: sketchData{n: p.Count}}
	sum, mean, overflow := w.total()
	var q [3]float64
	p.Sketch.quantiles(reportedQuantiles, q[:])
	for i := range q {
		q[i] = min(max(q[i], p.Min), p.Max)
	}
	return Result{
		Stream:   p.Stream,
		DeviceID: p.DeviceID,
		Size:     p.Size,
		Start:    p.Start,
		End:      p.End(),
		Count:    p.Count,
		Sum:      sum,
		Overflow: overflow,
		Min:      p.Min,
		Max:      p.Max,
		Mean:     mean,
		Last:     p.Last,
		LastTS:   p.LastTS,
		P50:      q[0],
		P95:      q[1],
		P99:      q[2],
		Sketch:   p.Sketch.Clone(),
		Final:    p.Final,
	}
}

// Flags of the partial encoding.
const (
	partialSiteWide = 1 << 0
	partialFinal    = 1 << 1
	partialOver     = 1 << 2
)

// maxPartialName bounds a partial's stream and device id.
const maxPartialName = 1024

// AppendBinary appends the partial's encoding (docs/format/peer-windows.md).
func (p *Partial) AppendBinary(dst []byte) []byte {
	var flags byte
	if p.DeviceID == "" {
		flags |= partialSiteWide
	}
	if p.Final {
		flags |= partialFinal
	}
	if math.Float64bits(p.Over) != 0 {
		flags |= partialOver
	}
	dst = append(dst, flags)
	dst = appendStr(dst, p.Stream)
	if p.DeviceID != "" {
		dst = appendStr(dst, p.DeviceID)
	}
	dst = binary.AppendUvarint(dst, uint64(p.Size.Milliseconds()))
	dst = binary.AppendVarint(dst, p.Start)
	dst = binary.AppendUvarint(dst, p.Count)
	for _, f := range [...]float64{p.Sum, p.Min, p.Max, p.Last} {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	}
	dst = binary.AppendVarint(dst, p.LastTS)
	if flags&partialOver != 0 {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(p.Over))
	}
	sk := p.Sketch.AppendBinary(nil)
	dst = binary.AppendUvarint(dst, uint64(len(sk)))
	return append(dst, sk...)
}

// DecodePartial decodes a partial. It accepts exactly what AppendBinary
// writes for a partial holding at least one value, and refuses anything else
// with an error wrapping ErrCorruptPartial.
func DecodePartial(b []byte) (Partial, error) {
	d := decoder{b: b, corrupt: ErrCorruptPartial}
	var p Partial
	flags := d.byte()
	if flags&^(partialSiteWide|partialFinal|partialOver) != 0 {
		d.fail("unknown flags %#x", flags)
	}
	p.Final = flags&partialFinal != 0
	p.Stream = d.boundedStr(0)
	if flags&partialSiteWide == 0 {
		p.DeviceID = d.boundedStr(1)
	}
	size := d.uvarint()
	if d.err == nil && (size == 0 || size > math.MaxInt64/uint64(time.Millisecond)) {
		d.fail("window size %d ms out of range", size)
	}
	p.Size = time.Duration(size) * time.Millisecond
	p.Start = d.varint()
	if d.err == nil && p.Start%int64(size) != 0 {
		d.fail("start %d not a multiple of the size %d", p.Start, size)
	}
	if d.err == nil && p.Start > math.MaxInt64-int64(size) {
		d.fail("window end beyond int64")
	}
	p.Count = d.uvarint()
	if d.err == nil && p.Count == 0 {
		d.fail("empty partial")
	}
	p.Sum, p.Min, p.Max, p.Last = d.float(), d.float(), d.float(), d.float()
	if d.err == nil && !(p.Min <= p.Max && p.Min <= p.Last && p.Last <= p.Max) {
		d.fail("min %v, max %v, last %v out of order", p.Min, p.Max, p.Last)
	}
	p.LastTS = d.varint()
	if d.err == nil && (p.LastTS < p.Start || p.LastTS >= p.Start+int64(size)) {
		d.fail("last_ts %d outside the window", p.LastTS)
	}
	if flags&partialOver != 0 {
		if p.Over = d.float(); d.err == nil && math.Float64bits(p.Over) == 0 {
			d.fail("carry flag with a carry of +0")
		}
	}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.fail("sketch length %d past the end", n)
	}
	if d.err != nil {
		return Partial{}, d.err
	}
	p.Sketch = new(Sketch)
	if err := p.Sketch.UnmarshalBinary(d.b[:n]); err != nil {
		return Partial{}, fmt.Errorf("%w: %w", ErrCorruptPartial, err)
	}
	d.b = d.b[n:]
	if p.Sketch.Count() != p.Count {
		d.fail("count %d, sketch count %d", p.Count, p.Sketch.Count())
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Partial{}, d.err
	}
	return p, nil
}

// boundedStr reads a str of minLen to maxPartialName bytes.
func (d *decoder) boundedStr(minLen int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n < uint64(minLen) || n > maxPartialName || n > uint64(len(d.b)) {
		d.fail("string length %d out of range", n)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// float reads a finite f64.
func (d *decoder) float() float64 {
	f := math.Float64frombits(d.uint64())
	if d.err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
		d.fail("non-finite number %v", f)
	}
	return f
}

// OpenPartials returns the partials (Final false, each with its own sketch)
// of the stream's open windows that overlap [from, to), selected as Open
// selects them, in no particular order.
func (e *Engine) OpenPartials(streamName, deviceID string, size time.Duration, from, to int64) []Partial {
	var out []Partial
	e.eachOpen(streamName, deviceID, size, from, to, func(s *stream, k *key, w *window) {
		p := e.partial(k, w)
		out = append(out, Partial{
			Key:   Key{Stream: s.name, DeviceID: k.device, Size: e.durs[p.size], Start: p.start},
			Count: p.sk.n, Sum: p.sum, Over: p.over, Min: p.min, Max: p.max, Last: p.last, LastTS: p.lastTS,
			Sketch: &Sketch{m: e.m, sketchData: p.sk},
		})
	})
	return out
}

// SumOfMean returns the Sum and Over of a partial of count values whose mean
// is mean: for a window result that holds its sum saturated and its exact
// mean, exact to rounding.
func SumOfMean(count uint64, mean float64) (sum, over float64) {
	return 0, math.Ldexp(mean, -spillScale) * float64(count)
}
