// Package window computes event-time tumbling-window aggregates for the
// processor. For every stream, each configured size (default 1m, 5m, 1h), and
// both each device and the whole site, it keeps the count, sum, min, max, mean,
// last value (the one with the latest event time; of equal times, the one added
// later) and a quantile sketch of the values, and emits one final Result per
// window, with p50, p95 and p99, when the window closes. Open windows can be
// read as partial Results, and as mergeable Partials: two nodes that each saw
// some of a window's events merge their Partials into exactly the window of
// all of them (partial.go). A stream's state can be checkpointed: encoded
// (AppendStreamState) and restored into another Engine of the same options
// (RestoreStream), which then continues exactly as the first would have. It is
// pure: no clock, no I/O, no goroutines.
//
// Windows and lateness: a window of size d covers event times [start, start+d)
// in Unix milliseconds, start a multiple of d since the epoch. Each stream has a
// watermark W that never decreases: after every event W = max(W, maxTS −
// AllowedLateness), maxTS the highest event time the stream has seen, and
// Advance can raise it further (the processor's idle timeout, so that a quiet
// stream's windows still close). A window closes when its end is ≤ W. An event
// is added to the window of each size that is still open and skipped for each
// size whose window has closed; an event skipped for at least one size is late,
// and counted per stream. Every window closes exactly once, and only windows
// that received an event exist.
//
// Determinism: the Results, and the order OnClose receives them in, are a
// function of the sequence of calls alone, so replaying the log after a crash,
// from its start or from a checkpoint, reproduces them exactly (bit for bit on
// a given CPU architecture; floating point may differ in the last bit
// elsewhere). Nothing depends on the clock or on map iteration order; the key
// table's random hash seed affects only its layout. Within one Add or Advance,
// windows close ordered by end, then size, then device id (the site-wide
// window, device id "", first), then start.
//
// Quantiles come from a Sketch (DDSketch-style, log-spaced buckets): for a
// window of n values, P50 is within relative error Accuracy (default 1%) of the
// value of rank ⌊0.5·(n−1)⌋ in ascending order, and likewise P95 and P99, and
// all three lie within [Min, Max]: a bucket's representative may not (4.1787
// for 4.2), so results clamp to the window's range. Values of magnitude below
// 2^-1022 count as zero. Sketch states the guarantee exactly.
//
// Values are finite (the processor passes no other). Their sum may still lie
// beyond float64 (1.7e308 twice): a window carries such a sum on scaled down
// (addSum), so Sum is ±MaxFloat64 with Overflow set and Mean is the exact
// sum's mean; every aggregate of a Result is finite.
//
// The device id "" names the site-wide windows: an event with an empty device
// id (ingest accepts none) counts in those only. In Open, "*" selects every
// device, so a device named "*" can only be read along with all the others.
package window

import (
	"math"
	"slices"
	"time"
	"unsafe"
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
//
// Two things keep an event cheap with many keys, where cache misses dominate.
// Sizes that divide each other are computed from one another: an event is
// stored only in the window of the smallest size that is still open, and when a
// window closes its aggregate is merged, exactly, into the window of each size
// it is the largest divisor of; so an event updates one window per key, not one
// per size. And window updates are applied in small batches (see pending.go).
// Neither is observable, except that floating-point sums are grouped per child
// window rather than added one by one.
//
// Memory is what a node with many devices, and a recovery replaying it, holds:
// each open window is a 128-byte slot in its key (a key of the default sizes
// has four: one spare for a window past its end but not yet closed), plus its
// sketch's counts past the 16 inline, a byte each while no bucket exceeds 255
// (sketch.go). BenchmarkOpenWindowMemory measures it: about 180–310 bytes per
// open window with the key table and end index.
type Engine struct {
	sizes    []int64         // window sizes in ms, ascending
	durs     []time.Duration // the same sizes as durations
	child    []int           // per size: index of its largest divisor size, or -1
	parents  [][]int         // per size: the sizes whose child it is
	lateness int64           // ms
	m        *mapping
	onClose  func(Result)

	streams map[string]*stream
	last    *stream        // stream of the previous call, to skip the map lookup
	open    int            // open windows over all streams
	closing bool           // OnClose is running
	ends    []int64        // scratch for Add: window end per size
	pending []pendingEvent // decided, not yet applied; see flush
	touched int            // sink for the loads in flush that bring keys into cache
}

// stream is the state of one stream.
type stream struct {
	name  string
	keys  keyTable // per device; a key with no open window is removed
	site  *key     // the site-wide windows, device id ""
	w     int64    // watermark; math.MinInt64 until set
	hasW  bool
	maxTS int64
	seen  bool // maxTS is set
	late  uint64
	// noSite: the stream's site-wide windows are another engine's (split.go)
	noSite bool
	ends   endIndex
	// pendingEnd is the earliest end of a window a pending event goes to;
	// math.MaxInt64 if none.
	pendingEnd int64
}

// key holds the open windows of one (stream, device) or of the site. Every open
// window's ancestors (parents, their parents, ...) are open too.
type key struct {
	// device is the keyTable key. Up to len(name) bytes it points into name,
	// so comparing it loads the cache lines the window update needs next
	// rather than a separate allocation: one miss less per event.
	device string
	name   [40]byte
	open   int // open windows; each has one entry in its stream's endIndex
	// lead is the latest window of the smallest size, the one nearly every
	// event goes to; it lives in the key so that an event costs no cache miss
	// past the key. ws[i-1] for 0 < i < len(sizes) is the latest window of size
	// i. In both, start emptyStart means none. Windows of older starts follow in
	// ws, in no order.
	lead window
	ws   []window
}

// window is one open window: the events stored in it directly and the merged
// aggregates of its closed children. A window with open children may be empty.
type window struct {
	start               int64
	sum, min, max, last float64
	lastTS              int64
	sk                  sketchData // sk.n is the count
	size                int        // index into Engine.sizes
	// over is the part of the values' sum that did not fit in sum, scaled
	// down: they add up to sum + over·2^spillScale. It is 0 until a sum
	// would overflow float64 (see addSum); last, for the hot fields' layout.
	over float64
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
		pending:  make([]pendingEvent, 0, pendingBatch),
	}
	e.durs = slices.Sorted(slices.Values(o.Sizes))
	n := len(e.durs)
	e.sizes = make([]int64, n)
	e.child = make([]int, n)
	e.parents = make([][]int, n)
	e.ends = make([]int64, n)
	for i, d := range e.durs {
		e.sizes[i] = d.Milliseconds()
		e.child[i] = -1
		for j := i - 1; j >= 0; j-- {
			if e.sizes[i]%e.sizes[j] == 0 {
				e.child[i] = j
				e.parents[j] = append(e.parents[j], i)
				break
			}
		}
	}
	return e, nil
}

// Add processes one event, in log order; see the package comment for the rules.
// It returns true if the event was late: skipped for at least one size because
// that window had already closed (an event time outside [MinTime, MaxTime] is
// late for all). Windows the raised watermark passes are closed and passed to
// OnClose before Add returns. An empty deviceID counts in the site-wide windows
// only.
func (e *Engine) Add(streamName, deviceID string, ts int64, value float64) (late bool) {
	return e.add(streamName, deviceID, ts, value, true)
}

// AddSite is Add for the site-wide windows only, without counting the event
// late: for a stream split across engines (split.go), whose engine of the
// device adds the event to the device's windows and counts it.
func (e *Engine) AddSite(streamName string, ts int64, value float64) {
	e.add(streamName, "", ts, value, false)
}

func (e *Engine) add(streamName, deviceID string, ts int64, value float64, countLate bool) (late bool) {
	e.checkNotClosing()
	s := e.stream(streamName)
	if ts < MinTime || ts > MaxTime {
		if countLate {
			s.late++
		}
		return true
	}
	// Decide now, from the watermark alone, which windows take the event; the
	// update itself may be deferred (see pending).
	var sizes uint64
	for i, size := range e.sizes {
		if c := e.child[i]; c >= 0 && e.ends[c] > s.w {
			// The open child window has it and will pass it on; this
			// window, which ends no earlier, is open too.
			e.ends[i] = math.MaxInt64
			continue
		}
		end := floor(ts, size) + size
		e.ends[i] = end
		if end <= s.w {
			late = true
			continue
		}
		sizes |= 1 << i
		s.pendingEnd = min(s.pendingEnd, end)
	}
	if late && countLate {
		s.late++
	}
	if sizes != 0 {
		e.pending = append(e.pending, pendingEvent{s: s, device: deviceID, ts: ts, value: value, sizes: sizes})
		if len(e.pending) == cap(e.pending) {
			e.flush()
		}
	}
	if !s.seen || ts > s.maxTS {
		s.maxTS, s.seen = ts, true
		if w := ts - e.lateness; w > s.w || !s.hasW {
			e.raise(s, w)
		}
	}
	return late
}

// floor returns the start of the window of size size holding ts.
func floor(ts, size int64) int64 {
	r := ts % size
	if r < 0 {
		r += size
	}
	return ts - r
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

// EarliestEnd returns the end of the stream's open window that closes first;
// ok is false if the stream has none. A watermark of at least end closes a
// window, a lower one none: the cheap test for whether the idle timeout has
// anything to close.
func (e *Engine) EarliestEnd(streamName string) (end int64, ok bool) {
	s := e.streams[streamName]
	if s == nil {
		return 0, false
	}
	end = s.pendingEnd // pending events' windows, and their parents, end no earlier
	if len(s.ends.heap) > 0 {
		end = min(end, s.ends.heap[0].end)
	}
	return end, end != math.MaxInt64
}

// OpenWindows returns the number of open windows, device and site-wide, over
// all streams and sizes.
func (e *Engine) OpenWindows() int {
	e.flush()
	return e.open
}

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
		s = &stream{name: name, keys: newKeyTable(), site: e.newKey(""), w: math.MinInt64, pendingEnd: math.MaxInt64}
		s.ends.init(len(e.sizes))
		e.streams[name] = s
	}
	e.last = s
	return s
}

func (e *Engine) newKey(device string) *key {
	k := &key{device: device, lead: window{start: emptyStart}}
	if n := copy(k.name[:], device); n == len(device) && n > 0 {
		k.device = unsafe.String(&k.name[0], n) // k is never copied, and name never written again
	}
	k.ws = make([]window, len(e.sizes)-1, len(e.sizes)) // room for one older window
	for i := range k.ws {
		k.ws[i].start = emptyStart
	}
	return k
}

// touch loads the cache lines of k that an event updates and returns a value
// that depends on them.
func (k *key) touch() int {
	return len(k.device) + int(k.open) + int(k.lead.sk.n) + int(k.lead.sk.pos.small[smallWords-1])
}

// latest returns the slot of k's latest window of size i.
func (k *key) latest(i int) *window {
	if i == 0 {
		return &k.lead
	}
	return &k.ws[i-1]
}

// older returns the index in k.ws of the first window of an older start.
func (e *Engine) older() int { return len(e.sizes) - 1 }

// addTo adds the event to k's window of size i starting at start, creating it
// if needed.
func (e *Engine) addTo(s *stream, k *key, i int, start, ts int64, v float64, b bucket) {
	w := &k.lead
	if i != 0 {
		w = &k.ws[i-1]
	}
	if w.start != start { // not the common case, the latest window
		w = e.window(s, k, i, start)
	}
	w.add(ts, v, b)
}

// window returns k's window of size i starting at start, creating it, and
// first its missing ancestors, if needed. The pointer is valid until k.ws next
// grows.
func (e *Engine) window(s *stream, k *key, i int, start int64) *window {
	if w := e.find(k, i, start); w != nil {
		return w
	}
	for _, p := range e.parents[i] {
		e.window(s, k, p, floor(start, e.sizes[p]))
	}
	w := k.latest(i)
	switch {
	case w.start == emptyStart:
	case start > w.start: // a new latest window; the current one stays open
		k.growWs()
		k.ws = append(k.ws, *w)
		w = k.latest(i)
	default:
		k.growWs()
		k.ws = append(k.ws, window{})
		w = &k.ws[len(k.ws)-1]
	}
	*w = window{start: start, size: i, min: math.Inf(1), max: math.Inf(-1), lastTS: math.MinInt64}
	k.open++
	e.open++
	s.ends.insert(k, i, start+e.sizes[i])
	return w
}

// growWs makes room in k.ws for one more window, one at a time rather than
// doubling: more than one older window is rare and brief (a minute's and a
// 5-minute window past their end at once, at every 5-minute boundary, for all
// keys together), and take gives the room back when the last one closes.
func (k *key) growWs() {
	if len(k.ws) == cap(k.ws) {
		ws := make([]window, len(k.ws), len(k.ws)+1)
		copy(ws, k.ws)
		k.ws = ws
	}
}

// find returns k's window of size i starting at start, or nil.
func (e *Engine) find(k *key, i int, start int64) *window {
	if w := k.latest(i); w.start == start {
		return w
	}
	for j := e.older(); j < len(k.ws); j++ {
		if w := &k.ws[j]; w.size == i && w.start == start {
			return w
		}
	}
	return nil
}

// windows calls f for each open window of k.
func (k *key) windows(f func(*window)) {
	if k.lead.start != emptyStart {
		f(&k.lead)
	}
	for j := range k.ws {
		if w := &k.ws[j]; w.start != emptyStart {
			f(w)
		}
	}
}

func (w *window) add(ts int64, v float64, b bucket) {
	w.addSum(v)
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

// spillScale is the power of two by which over outweighs sum in a window:
// large enough that over cannot overflow (each add or merge spills at most
// 2^(1024−spillScale) into it, and there are fewer than 2^65 of them), small
// enough that scaling a sum that overflowed loses no bit (such a sum is at
// least 2^970, and 2^(970−spillScale) is a normal float64).
const spillScale = 128

// addSum adds x to the window's sum. A finite sum that would overflow moves
// into over instead, scaled down exactly, so that any finite values add up to
// a finite (sum, over); the rare case is out of line, so the common one stays
// an add and a compare.
func (w *window) addSum(x float64) {
	s := w.sum + x
	if s-s != 0 { // s is ±Inf: s−s is 0 for every finite s
		s = w.spill(x)
	}
	w.sum = s
}

// spill moves the sum into over and returns x, the new sum.
//
//go:noinline
func (w *window) spill(x float64) float64 {
	w.over += math.Ldexp(w.sum, -spillScale)
	return x
}

// total returns the sum of the window's values rounded to float64, or
// ±MaxFloat64 and overflow true beyond it, and their mean: Sum / Count, or
// with overflow the exact sum's, clamped to [min, max] (which only the
// rounding of an inexact sum can leave). The window must not be empty.
func (w *window) total() (sum, mean float64, overflow bool) {
	n := float64(w.sk.n)
	sum = w.sum
	if w.over != 0 {
		t := w.over + math.Ldexp(w.sum, -spillScale) // the sum, scaled down
		if math.Abs(t) > math.Ldexp(math.MaxFloat64, -spillScale) {
			return math.Copysign(math.MaxFloat64, t), min(max(math.Ldexp(t/n, spillScale), w.min), w.max), true
		}
		sum = math.Ldexp(t, spillScale)
	}
	return sum, min(max(sum/n, w.min), w.max), false
}

// merge adds the aggregate of c, a closed child window, to w. Its last value
// wins ties: no event of c's time range can have reached w before c closed.
func (w *window) merge(c *window) {
	w.addSum(c.sum)
	w.over += c.over
	w.min = min(w.min, c.min)
	w.max = max(w.max, c.max)
	if c.lastTS >= w.lastTS {
		w.last, w.lastTS = c.last, c.lastTS
	}
	w.sk.merge(&c.sk)
}

// take removes and returns k's window of size i starting at start.
func (e *Engine) take(k *key, i int, start int64) window {
	if w := k.latest(i); w.start == start {
		out := *w
		*w = window{start: emptyStart}
		k.open--
		return out
	}
	for j := e.older(); j < len(k.ws); j++ {
		if w := &k.ws[j]; w.size == i && w.start == start {
			out := *w
			last := len(k.ws) - 1
			k.ws[j] = k.ws[last]
			k.ws[last] = window{}
			k.ws = k.ws[:last]
			if last == e.older() && cap(k.ws) > last+1 {
				// Two or more older windows (a minute's and a 5-minute
				// window closing at once) grew ws; the last of them has
				// gone, so give the room back rather than hold it for as
				// long as the key lives: ws is most of a key's memory.
				k.ws = append(make([]window, 0, last+1), k.ws...)
			}
			k.open--
			return out
		}
	}
	panic("window: closing a window that is not open")
}
