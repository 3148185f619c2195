package window

import "math"

// Events are applied to their windows in batches of up to pendingBatch, so
// that the key lookups and the first touch of each key's windows, the cache
// misses that dominate with many keys, overlap instead of running one after
// another. Nothing can observe the deferral: which windows an event goes to is
// decided in Add from the watermark alone; pending events are applied in
// order, all of them before the watermark passes the end of a window one of
// them goes to and before any window closes (see raise), and before Open and
// OpenWindows read window state. Keys are removed only while closing, when
// nothing is pending, so a key found in flush stays valid through it.
const pendingBatch = 32

// pendingEvent is an event whose windows are decided but not yet updated.
type pendingEvent struct {
	s      *stream
	device string
	ts     int64
	value  float64
	sizes  uint64 // bit i: add directly to the window of size i
	hash   uint64 // of device, during flush
	k      *key   // looked up during flush
}

// flush applies the pending events in order.
func (e *Engine) flush() {
	p := e.pending
	if len(p) == 0 {
		return
	}
	// Passes of independent loads, each a tight loop so that many of their
	// cache misses are in flight at once: each id's home slot in the key
	// table, the key found there (most likely the id's), then the exact
	// lookups, which now hit the cache.
	for i := range p {
		if p[i].device != "" {
			p[i].hash = p[i].s.keys.hash(p[i].device)
		}
	}
	for i := range p {
		if p[i].device != "" {
			p[i].k = p[i].s.keys.home(p[i].hash)
		}
	}
	var touch int
	for i := range p {
		if k := p[i].k; k != nil {
			touch += k.touch()
		}
	}
	e.touched += touch
	for i := range p {
		if p[i].device != "" && p[i].s.keys.n > 0 {
			p[i].k = p[i].s.keys.getHash(p[i].device, p[i].hash)
		}
	}
	for i := range p {
		e.apply(&p[i])
		p[i].s.pendingEnd = math.MaxInt64
	}
	clear(p)
	e.pending = p[:0]
}

// apply adds a pending event to the windows Add chose for it.
func (e *Engine) apply(p *pendingEvent) {
	s, k := p.s, p.k
	if p.device != "" && k == nil {
		// Not found during flush: new, or created by an earlier event of
		// this batch.
		if k = s.keys.get(p.device); k == nil {
			k = e.newKey(p.device)
			s.keys.put(k)
		}
	}
	b := e.m.bucketOf(p.value) // once for all windows
	for i, size := range e.sizes {
		if p.sizes&(1<<i) == 0 {
			continue
		}
		start := floor(p.ts, size)
		if k != nil {
			e.addTo(s, k, i, start, p.ts, p.value, b)
		}
		if !s.noSite {
			e.addTo(s, s.site, i, start, p.ts, p.value, b)
		}
	}
}
