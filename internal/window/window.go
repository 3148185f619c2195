// Package window computes event-time tumbling-window aggregates. For every
// stream, each configured size, and both each device and the whole site, it
// keeps the count, sum, min, max, mean, last value (the value with the latest
// event time) and a quantile sketch (p50, p95, p99) of the values, and emits one
// final Result per window when the window closes.
//
// A window of size d covers event times [start, start+d) in Unix milliseconds,
// start a multiple of d since the epoch. Each stream has a watermark W that
// never decreases: after every event W = max(W, maxTS − AllowedLateness), where
// maxTS is the highest event time the stream has seen, and Advance can raise it
// further (the processor's idle timeout). A window closes when its end is ≤ W.
// An event is added to the window of each size that is still open, and skipped
// for each size whose window has already closed; an event skipped for at least
// one size is late, and counted. Every window is closed exactly once.
//
// Determinism: the package reads no clock, does no I/O and uses no randomness;
// the Results, and the order OnClose receives them in, are a function of the
// sequence of calls alone, so replaying a log reproduces them exactly. Within
// one Add or Advance, windows close ordered by end, then size, then device id
// (the site-wide window, device id "", first), then start.
//
// The quantiles come from a Sketch (DDSketch-style, log-spaced buckets): for a
// window of n values, P50 is within relative error Accuracy (default 1%) of the
// value of rank ⌊0.5·(n−1)⌋ in sorted order, and likewise P95 and P99; see
// Sketch for the exact statement.
package window

import (
	"math"
	"slices"
	"time"
)

// Event times outside [MinTime, MaxTime] (about ±73 million years) cannot be
// windowed without overflow; Add counts such events as late for every size and
// ignores them otherwise. Ingest never accepts them.
const (
	MinTime int64 = -1 << 61
	MaxTime int64 = 1 << 61
)

// emptyStart marks a window slot that holds no window; real starts are ≥
// MinTime − the largest size, far above it.
const emptyStart = math.MinInt64

// Engine holds the open windows of a set of streams. It is not safe for
// concurrent use: the processor gives each worker its own Engine and routes a
// stream's events to one worker.
type Engine struct {
	sizes    []int64         // window sizes in ms, ascending
	durs     []time.Duration // the same sizes as durations
	lateness int64           // ms
	m        *mapping
	onClose  func(Result)

	streams map[string]*stream
	last    *stream // stream of the previous call, to skip the map lookup
	open    int     // open windows over all streams
	closing bool    // OnClose is running
}

// stream is the state of one stream.
type stream struct {
	name  string
	keys  map[string]*key // per device; a key with no open window is removed
	site  *key            // the site-wide windows, device id ""
	w     int64           // watermark; math.MinInt64 until set
	hasW  bool
	maxTS int64
	seen  bool // maxTS is set
	late  uint64
	ends  endIndex
}

// key holds the open windows of one (stream, device) or of the site.
type key struct {
	device string
	open   int // open windows; each has one entry in its stream's endIndex
	// ws[i] for i < len(sizes) is the window of size i with the latest start
	// (start emptyStart: none); windows of older starts follow, in no order.
	ws []window
}

// window is one open window.
type window struct {
	start               int64
	size                int // index into Engine.sizes
	sum, min, max, last float64
	lastTS              int64
	sk                  Sketch // sk.n is the count; sk.m is set when it leaves
}

// New returns an Engine for the options, or the error of o.Validate.
func New(o Options) (*Engine, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	m, _ := newMapping(o.Accuracy)
	if o.Accuracy == DefaultAccuracy {
		m = defaultMapping
	}
	e := &Engine{
		lateness: o.AllowedLateness.Milliseconds(),
		m:        m,
		onClose:  o.OnClose,
		streams:  map[string]*stream{},
	}
	e.durs = slices.Sorted(slices.Values(o.Sizes))
	for _, d := range e.durs {
		e.sizes = append(e.sizes, d.Milliseconds())
	}
	return e, nil
}

// Add processes one event, in log order; see the package comment for the rules.
// It returns true if the event was late: skipped for at least one size because
// that window had already closed. Windows the raised watermark passes are closed
// and passed to OnClose before Add returns. An empty deviceID counts in the
// site-wide windows only.
func (e *Engine) Add(streamName, deviceID string, ts int64, value float64) (late bool) {
	e.checkNotClosing()
	s := e.stream(streamName)
	if ts < MinTime || ts > MaxTime {
		s.late++
		return true
	}
	b := e.m.bucketOf(value) // once for all windows
	var k *key
	if deviceID != "" {
		k = s.keys[deviceID]
	}
	for i, size := range e.sizes {
		r := ts % size
		if r < 0 {
			r += size
		}
		start := ts - r
		if start+size <= s.w {
			late = true
			continue
		}
		if deviceID != "" {
			if k == nil {
				k = e.newKey(deviceID)
				s.keys[deviceID] = k
			}
			e.addTo(s, k, i, start, ts, value, b)
		}
		e.addTo(s, s.site, i, start, ts, value, b)
	}
	if late {
		s.late++
	}
	if !s.seen || ts > s.maxTS {
		s.maxTS, s.seen = ts, true
		if w := ts - e.lateness; w > s.w || !s.hasW {
			e.raise(s, w)
		}
	}
	return late
}

// Advance raises the stream's watermark to w if that is higher, closing the
// windows it passes; the processor calls it when a stream has been quiet for its
// idle timeout. It creates the stream if it has not been seen.
func (e *Engine) Advance(streamName string, w int64) {
	e.checkNotClosing()
	s := e.stream(streamName)
	if w > s.w || !s.hasW {
		e.raise(s, w)
	}
}

// Watermark returns the stream's watermark; ok is false before the stream's
// first Add or Advance.
func (e *Engine) Watermark(streamName string) (w int64, ok bool) {
	if s := e.streams[streamName]; s != nil && s.hasW {
		return s.w, true
	}
	return 0, false
}

// Late returns how many events of the stream were late for at least one size.
func (e *Engine) Late(streamName string) uint64 {
	if s := e.streams[streamName]; s != nil {
		return s.late
	}
	return 0
}

// OpenWindows returns the number of open windows, device and site-wide, over
// all streams and sizes.
func (e *Engine) OpenWindows() int { return e.open }

func (e *Engine) checkNotClosing() {
	if e.closing {
		panic("window: Add or Advance called from OnClose")
	}
}

func (e *Engine) stream(name string) *stream {
	if s := e.last; s != nil && s.name == name {
		return s
	}
	s := e.streams[name]
	if s == nil {
		s = &stream{name: name, keys: map[string]*key{}, site: e.newKey(""), w: math.MinInt64}
		s.ends.init(len(e.sizes))
		e.streams[name] = s
	}
	e.last = s
	return s
}

func (e *Engine) newKey(device string) *key {
	k := &key{device: device, ws: make([]window, len(e.sizes), len(e.sizes)+2)}
	for i := range k.ws {
		k.ws[i].start = emptyStart
	}
	return k
}

// addTo adds the event to k's window of size i starting at start, creating it
// if needed.
func (e *Engine) addTo(s *stream, k *key, i int, start, ts int64, v float64, b bucket) {
	if w := &k.ws[i]; w.start == start { // the common case: the latest window
		w.add(ts, v, b)
		return
	}
	cur := &k.ws[i]
	switch {
	case cur.start == emptyStart:
	case start > cur.start: // a new latest window; the current one stays open
		k.ws = append(k.ws, *cur)
		cur = &k.ws[i]
	default:
		for j := len(e.sizes); j < len(k.ws); j++ {
			if w := &k.ws[j]; w.size == i && w.start == start {
				w.add(ts, v, b)
				return
			}
		}
		k.ws = append(k.ws, window{})
		cur = &k.ws[len(k.ws)-1]
	}
	*cur = window{start: start, size: i, sum: v, min: v, max: v, last: v, lastTS: ts}
	cur.sk.addBucket(b)
	k.open++
	e.open++
	s.ends.insert(k, i, start+e.sizes[i])
}

func (w *window) add(ts int64, v float64, b bucket) {
	w.sum += v
	if v < w.min {
		w.min = v
	}
	if v > w.max {
		w.max = v
	}
	if ts >= w.lastTS {
		w.last, w.lastTS = v, ts
	}
	w.sk.addBucket(b)
}

// take removes and returns k's window of size i starting at start.
func (k *key) take(i int, start int64, nsizes int) window {
	if w := &k.ws[i]; w.start == start {
		out := *w
		*w = window{start: emptyStart}
		k.open--
		return out
	}
	for j := nsizes; j < len(k.ws); j++ {
		if w := &k.ws[j]; w.size == i && w.start == start {
			out := *w
			last := len(k.ws) - 1
			k.ws[j] = k.ws[last]
			k.ws[last] = window{}
			k.ws = k.ws[:last]
			k.open--
			return out
		}
	}
	panic("window: closing a window that is not open")
}
