package window

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Result is the aggregate of one window: final when the window has closed,
// partial (Final false) when taken from an open window by Engine.Open.
type Result struct {
	Stream   string
	DeviceID string // "" for the site-wide window of the stream
	Size     time.Duration
	Start    int64 // Unix ms, a multiple of Size since the epoch
	End      int64 // Start + Size, exclusive
	Count    uint64
	// Sum adds the values in float64, grouped by child window (see Engine):
	// exact whenever every partial sum is representable. A partial sum that
	// would overflow float64 is carried on scaled down, so any finite values
	// give a finite Sum and Mean; a Sum beyond ±MaxFloat64 is reported as
	// ±MaxFloat64 with Overflow set.
	Sum      float64
	Overflow bool
	Min, Max float64
	// Mean is Sum / Count, or with Overflow the mean of the exact sum,
	// clamped to [Min, Max] (which only the rounding of an inexact sum can
	// leave).
	Mean   float64
	Last   float64 // the value with the latest event time; of equal ones, the later added
	LastTS int64   // event time of Last
	// P50, P95 and P99 are Sketch quantiles clamped to [Min, Max]: within
	// relative error Accuracy of the value of rank ⌊q·(Count−1)⌋ in ascending
	// order, q = 0.5, 0.95, 0.99, and never outside the values' range (a
	// bucket's representative may be: 4.1787 for 4.2 at 1 %).
	P50, P95, P99 float64
	Sketch        *Sketch // the window's values; owned by the receiver
	Final         bool
}

var reportedQuantiles = []float64{0.5, 0.95, 0.99}

func (e *Engine) result(streamName, device string, w *window, sk *Sketch, final bool) Result {
	var q [3]float64
	sk.quantiles(reportedQuantiles, q[:])
	for i := range q {
		q[i] = min(max(q[i], w.min), w.max)
	}
	sum, mean, overflow := w.total()
	return Result{
		Stream:   streamName,
		DeviceID: device,
		Size:     e.durs[w.size],
		Start:    w.start,
		End:      w.start + e.sizes[w.size],
		Count:    w.sk.n,
		Sum:      sum,
		Overflow: overflow,
		Min:      w.min,
		Max:      w.max,
		Mean:     mean,
		Last:     w.last,
		LastTS:   w.lastTS,
		P50:      q[0],
		P95:      q[1],
		P99:      q[2],
		Sketch:   sk,
		Final:    final,
	}
}

// Open returns partial results (Final false, each with its own copy of the
// sketch) of the stream's open windows that overlap [from, to): deviceID ""
// selects the site-wide windows, "*" those of every device and the site-wide
// ones, anything else that device's; size 0 selects every size, a size the
// Engine does not have selects nothing. Results are ordered like closes: by
// end, size, device id, start. Open changes no result and may be called from
// OnClose.
func (e *Engine) Open(streamName, deviceID string, size time.Duration, from, to int64) []Result {
	var out []Result
	e.eachOpen(streamName, deviceID, size, from, to, func(s *stream, k *key, w *window) {
		p := e.partial(k, w)
		out = append(out, e.result(s.name, k.device, &p, &Sketch{m: e.m, sketchData: p.sk}, false))
	})
	slices.SortFunc(out, compareResults)
	return out
}

// eachOpen calls f for each of the stream's open windows that Open selects.
func (e *Engine) eachOpen(streamName, deviceID string, size time.Duration, from, to int64, f func(*stream, *key, *window)) {
	s := e.streams[streamName]
	if s == nil {
		return
	}
	e.flush()
	si := -1
	if size != 0 {
		if si = slices.Index(e.durs, size); si < 0 {
			return
		}
	}
	collect := func(k *key) {
		k.windows(func(w *window) {
			if (si < 0 || w.size == si) && w.start < to && w.start+e.sizes[w.size] > from {
				f(s, k, w)
			}
		})
	}
	switch deviceID {
	case "":
		collect(s.site)
	case "*":
		collect(s.site)
		s.keys.all(collect)
	default:
		if k := s.keys.get(deviceID); k != nil {
			collect(k)
		}
	}
}

// compareResults orders results by End, Size, DeviceID, Start: the close order.
func compareResults(a, b Result) int {
	return cmp.Or(
		cmp.Compare(a.End, b.End),
		cmp.Compare(a.Size, b.Size),
		strings.Compare(a.DeviceID, b.DeviceID),
		cmp.Compare(a.Start, b.Start),
	)
}

// partial returns a copy of w, sharing no memory with it, with the aggregates
// of its open descendants merged in, children in order of start.
func (e *Engine) partial(k *key, w *window) window {
	out := *w
	out.sk = w.sk.clone()
	c := e.child[w.size]
	if c < 0 {
		return out
	}
	end := w.start + e.sizes[w.size]
	var kids []*window
	k.windows(func(x *window) {
		if x.size == c && x.start >= w.start && x.start < end {
			kids = append(kids, x)
		}
	})
	slices.SortFunc(kids, func(a, b *window) int { return cmp.Compare(a.start, b.start) })
	for _, x := range kids {
		px := e.partial(k, x)
		out.merge(&px)
	}
	return out
}
