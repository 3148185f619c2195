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
	Sum      float64 // added in event order
	Min, Max float64
	Mean     float64 // Sum / Count
	Last     float64 // the value with the latest event time; of equal ones, the later added
	LastTS   int64   // event time of Last
	// P50, P95 and P99 are Sketch quantiles: within relative error Accuracy of
	// the values of rank ⌊q·(Count−1)⌋.
	P50, P95, P99 float64
	Sketch        *Sketch // the window's values; owned by the receiver
	Final         bool
}

var reportedQuantiles = []float64{0.5, 0.95, 0.99}

func (e *Engine) result(streamName, device string, w *window, sk *Sketch, final bool) Result {
	var q [3]float64
	sk.quantiles(reportedQuantiles, q[:])
	return Result{
		Stream:   streamName,
		DeviceID: device,
		Size:     e.durs[w.size],
		Start:    w.start,
		End:      w.start + e.sizes[w.size],
		Count:    w.sk.n,
		Sum:      w.sum,
		Min:      w.min,
		Max:      w.max,
		Mean:     w.sum / float64(w.sk.n),
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
// end, size, device id, start. Open is read-only and may be called from OnClose.
func (e *Engine) Open(streamName, deviceID string, size time.Duration, from, to int64) []Result {
	s := e.streams[streamName]
	if s == nil {
		return nil
	}
	si := -1
	if size != 0 {
		if si = slices.Index(e.durs, size); si < 0 {
			return nil
		}
	}
	var out []Result
	collect := func(k *key) {
		for j := range k.ws {
			w := &k.ws[j]
			if w.start == emptyStart || si >= 0 && w.size != si {
				continue
			}
			if w.start < to && w.start+e.sizes[w.size] > from {
				sk := w.sk.Clone()
				sk.m = e.m
				out = append(out, e.result(s.name, k.device, w, sk, false))
			}
		}
	}
	switch deviceID {
	case "":
		collect(s.site)
	case "*":
		collect(s.site)
		for _, k := range s.keys {
			collect(k)
		}
	default:
		if k := s.keys[deviceID]; k != nil {
			collect(k)
		}
	}
	slices.SortFunc(out, compareResults)
	return out
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
