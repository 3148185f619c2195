package pressure

import (
	"cmp"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Hot-spot types (DESIGN §7).
const (
	// KeySkew: one device sends more than HotspotOptions.KeyShare of a
	// stream's events in a window.
	KeySkew = "key_skew"
	// StreamSkew: a stream's rate is more than HotspotOptions.StreamRatio
	// times the mean stream rate.
	StreamSkew = "stream_skew"
	// DeviceBurst: a device went over its rate limit (limits.device_rate)
	// in the last minute.
	DeviceBurst = "device_burst"
)

// HotspotTypes are the hot-spot types, in the order status lists them.
var HotspotTypes = []string{KeySkew, StreamSkew, DeviceBurst}

// Hotspot is one hot spot seen now, as /v1/status lists it. Share and Ratio
// depend on the type:
//   - key_skew: Key is the device; Share its fraction of the stream's events
//     in the window (a lower bound), Ratio Share over the threshold (0.10).
//   - stream_skew: Key is empty; Share the stream's fraction of all events,
//     Ratio its rate over the mean stream rate.
//   - device_burst: Key is the device, Stream that of its last event over
//     the limit; Share the fraction of its events over the limit, Ratio the
//     rate it sent at over the limit.
type Hotspot struct {
	Type   string  `json:"type"`
	Stream string  `json:"stream"`
	Key    string  `json:"key"`
	Share  float64 `json:"share"`
	Ratio  float64 `json:"ratio"`
}

// Hot-spot detection defaults.
const (
	DefaultKeyShare    = 0.10
	DefaultStreamRatio = 5
	// DefaultMinEvents is how many sampled events (about sampleEvery times
	// as many events) a stream's window must hold before its key skew means
	// anything, and how many events a stream needs to be a stream_skew: a
	// quiet stream is not "skewed".
	DefaultMinEvents = 100
	// topK is the devices a stream's window tracks (space-saving): every
	// device above 1/topK of the sampled events is among them.
	topK = 16
	// sampleEvery: one event in sampleEvery on average (at random, so no
	// device's rhythm aliases with it) goes into a stream's top-K; every
	// event is counted in its total.
	sampleEvery = 8
)

// HotspotOptions configure a HotspotDetector. Zero fields take the defaults.
type HotspotOptions struct {
	Window      time.Duration // counting window (default 1m: the node uses its smallest window size)
	KeyShare    float64       // default DefaultKeyShare
	StreamRatio float64       // default DefaultStreamRatio
	MinEvents   int64         // default DefaultMinEvents
	// Bursts, if set, adds the device_burst hot spots (from the rate limiter).
	Bursts func() []Hotspot
	now    func() time.Time // tests; default time.Now
}

// HotspotDetector counts events per stream and, within each stream, its
// busiest devices (from a random sample of one event in eight), per tumbling
// window, and reports the skew it sees. Observe is O(1) (a bounded top-K per
// stream) and takes only its stream's lock; ObserveAll takes it once per run
// of events of one stream. It is safe for concurrent use.
type HotspotDetector struct {
	opts    HotspotOptions
	streams sync.Map // stream name -> *streamCounts
}

// streamCounts are one stream's counts in the current and the last window.
type streamCounts struct {
	mu        sync.Mutex
	epoch     int64   // the current window's number; guarded by mu
	cur, prev topKeys // guarded by mu
	rng       uint64  // xorshift state for sampling; guarded by mu
}

// topKeys is a space-saving summary (Metwally et al.): the topK keys with
// their counts, each over-counted by at most its err.
type topKeys struct {
	events int64 // every event of the window
	total  int64 // the events sampled into slots
	n      int
	slots  [topK]struct {
		hash       uint64 // of key: compared first
		key        string
		count, err int64
	}
}

// keySeed hashes the keys of every top-K.
var keySeed = maphash.MakeSeed()

// NewHotspotDetector returns a detector with opts.
func NewHotspotDetector(opts HotspotOptions) *HotspotDetector {
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.KeyShare <= 0 {
		opts.KeyShare = DefaultKeyShare
	}
	if opts.StreamRatio <= 0 {
		opts.StreamRatio = DefaultStreamRatio
	}
	if opts.MinEvents <= 0 {
		opts.MinEvents = DefaultMinEvents
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	return &HotspotDetector{opts: opts}
}

// Observe counts one event of key (the device) on stream.
func (d *HotspotDetector) Observe(stream, key string) {
	e := d.epoch(d.opts.now())
	sc := d.counts(stream, e)
	sc.mu.Lock()
	sc.add(e, key)
	sc.mu.Unlock()
}

// ObserveAll counts n events, the ith of key(i) on stream(i), reading the
// clock once.
func (d *HotspotDetector) ObserveAll(n int, event func(i int) (stream, key string)) {
	if n == 0 {
		return
	}
	e := d.epoch(d.opts.now())
	var last string
	var sc *streamCounts
	for i := range n {
		stream, key := event(i)
		if sc == nil || stream != last {
			if sc != nil {
				sc.mu.Unlock()
			}
			sc, last = d.counts(stream, e), stream
			sc.mu.Lock()
		}
		sc.add(e, key)
	}
	sc.mu.Unlock()
}

func (d *HotspotDetector) epoch(now time.Time) int64 { return now.UnixNano() / int64(d.opts.Window) }

func (d *HotspotDetector) counts(stream string, epoch int64) *streamCounts {
	if v, ok := d.streams.Load(stream); ok {
		return v.(*streamCounts)
	}
	v, _ := d.streams.LoadOrStore(stream, &streamCounts{epoch: epoch})
	return v.(*streamCounts)
}

// add counts one event. sc.mu is held.
func (sc *streamCounts) add(epoch int64, key string) {
	sc.roll(epoch)
	sc.cur.events++
	if sc.rng == 0 {
		sc.rng = 0x9e3779b97f4a7c15
	}
	sc.rng ^= sc.rng << 13
	sc.rng ^= sc.rng >> 7
	sc.rng ^= sc.rng << 17
	if sc.rng%sampleEvery == 0 {
		sc.cur.add(key)
	}
}

// roll moves to window epoch. sc.mu is held.
func (sc *streamCounts) roll(epoch int64) {
	if epoch <= sc.epoch {
		return
	}
	if epoch == sc.epoch+1 {
		sc.prev = sc.cur
	} else {
		sc.prev = topKeys{}
	}
	sc.cur = topKeys{}
	sc.epoch = epoch
}

func (t *topKeys) add(key string) {
	t.total++
	h := maphash.String(keySeed, key)
	m := 0
	for i := range t.slots[:t.n] {
		s := &t.slots[i]
		if s.hash == h && s.key == key {
			s.count++
			return
		}
		if s.count < t.slots[m].count {
			m = i
		}
	}
	if t.n < topK {
		m = t.n
		t.n++
	}
	s := &t.slots[m]
	s.hash, s.key, s.err = h, key, s.count // a new slot's count is 0
	s.count++
}

// Hotspots returns the hot spots seen now: key skew in each stream's
// current window, or its last one if that held more events; stream skew
// over the current and last windows; and the device bursts. Never nil.
func (d *HotspotDetector) Hotspots() []Hotspot {
	out := []Hotspot{}
	e := d.epoch(d.opts.now())
	type recent struct {
		stream string
		n      int64
	}
	var rs []recent
	var sum int64
	d.streams.Range(func(k, v any) bool {
		stream, sc := k.(string), v.(*streamCounts)
		sc.mu.Lock()
		stale := sc.epoch < e-1
		sc.roll(e)
		cur, prev := sc.cur, sc.prev
		sc.mu.Unlock()
		n := cur.events + prev.events
		if stale {
			// Quiet for two windows: forget it. (An event being counted
			// into it right now is lost to the detector, not to storage.)
			d.streams.Delete(stream)
			return true
		}
		if n == 0 {
			return true
		}
		rs = append(rs, recent{stream, n})
		sum += n
		w := &cur
		if prev.events > cur.events {
			w = &prev
		}
		if w.total < d.opts.MinEvents {
			return true
		}
		for _, s := range w.slots[:w.n] {
			share := float64(s.count-s.err) / float64(w.total)
			if share > d.opts.KeyShare {
				out = append(out, Hotspot{Type: KeySkew, Stream: stream, Key: s.key, Share: share, Ratio: share / d.opts.KeyShare})
			}
		}
		return true
	})
	if len(rs) > 0 {
		mean := float64(sum) / float64(len(rs))
		for _, r := range rs {
			if r.n >= d.opts.MinEvents && float64(r.n) > d.opts.StreamRatio*mean {
				out = append(out, Hotspot{Type: StreamSkew, Stream: r.stream, Share: float64(r.n) / float64(sum), Ratio: float64(r.n) / mean})
			}
		}
	}
	if d.opts.Bursts != nil {
		out = append(out, d.opts.Bursts()...)
	}
	slices.SortFunc(out, func(a, b Hotspot) int {
		return cmp.Or(cmp.Compare(slices.Index(HotspotTypes, a.Type), slices.Index(HotspotTypes, b.Type)),
			cmp.Compare(b.Ratio, a.Ratio), cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.Key, b.Key))
	})
	return out
}

var hotspotsDesc = prometheus.NewDesc("holdfast_hotspots",
	"Hot spots seen now, by type: key_skew, stream_skew, device_burst (as /v1/status lists them).", []string{"type"}, nil)

// Describe implements prometheus.Collector: holdfast_hotspots{type}.
func (d *HotspotDetector) Describe(ch chan<- *prometheus.Desc) { ch <- hotspotsDesc }

// Collect implements prometheus.Collector.
func (d *HotspotDetector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{}
	for _, h := range d.Hotspots() {
		counts[h.Type]++
	}
	for _, t := range HotspotTypes {
		ch <- prometheus.MustNewConstMetric(hotspotsDesc, prometheus.GaugeValue, float64(counts[t]), t)
	}
}
