package store

import (
	"slices"
	"sync"
)

// runSpan is the most log offsets one index run covers. A query reads whole
// runs, so it bounds the records read to find a device's events in a stretch of
// the log; a run costs 32 bytes of memory.
const runSpan = 1 << 16

// run is a stretch of the log [first, last] holding events of one device (or one
// stream), with the range of their event times.
type run struct {
	first, last  uint64
	minTS, maxTS int64
}

// index maps each device and each stream to the runs of the log that hold its
// events, newest last. It answers "where are device X's events between t1 and
// t2" without reading the whole log.
type index struct {
	mu       sync.RWMutex
	byDevice map[string][]run // guarded by mu
	byStream map[string][]run // guarded by mu
	byWindow map[string][]run // guarded by mu; window result records by stream, times are window starts
}

func newIndex() *index {
	return &index{byDevice: map[string][]run{}, byStream: map[string][]run{}, byWindow: map[string][]run{}}
}

// indexAdd records that the event at off belongs to device and stream.
func indexAdd[S ~string | ~[]byte](x *index, device, stream S, ts int64, off uint64) {
	x.mu.Lock()
	extend(x.byDevice, device, ts, off)
	extend(x.byStream, stream, ts, off)
	x.mu.Unlock()
}

// extend adds the record at off to key's runs, which stay sorted by first
// offset and disjoint (disjoint and forget rely on it). Offsets mostly come
// in order, but not always: concurrent Appends index their batches in the
// order they take the index lock, not in the order of their offsets, so a
// batch may be indexed after one at higher offsets. Its record then joins
// the run it falls in, or a new run placed before the later ones.
func extend[S ~string | ~[]byte](m map[string][]run, key S, ts int64, off uint64) {
	runs := m[string(key)]
	i := len(runs) - 1
	for i >= 0 && runs[i].first > off {
		i--
	}
	if i >= 0 && off-runs[i].first < runSpan {
		r := &runs[i]
		r.last = max(r.last, off)
		r.minTS, r.maxTS = min(r.minTS, ts), max(r.maxTS, ts)
		return
	}
	m[string(key)] = slices.Insert(runs, i+1, run{first: off, last: off, minTS: ts, maxTS: ts})
}

// runs returns a copy of the runs for a device (or, if device is empty, a
// stream) overlapping [fromTS, toTS), newest first; ok is false if the key has no
// events at all.
func (x *index) runs(device, stream string, fromTS, toTS int64) ([]run, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if device != "" {
		return overlapping(x.byDevice[device], fromTS, toTS)
	}
	return overlapping(x.byStream[stream], fromTS, toTS)
}

// windowRuns is runs for window result records of a stream.
func (x *index) windowRuns(stream string, fromTS, toTS int64) ([]run, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return overlapping(x.byWindow[stream], fromTS, toTS)
}

// overlapping returns a copy of the runs overlapping [fromTS, toTS), newest
// first; ok is false if there are no runs at all. The index lock must be held.
func overlapping(all []run, fromTS, toTS int64) ([]run, bool) {
	ok := len(all) > 0
	out := make([]run, 0, len(all))
	for i := len(all) - 1; i >= 0; i-- {
		r := all[i]
		if r.maxTS >= fromTS && r.minTS < toTS {
			out = append(out, r)
		}
	}
	return out, ok
}

// forget drops runs that lie entirely below off (deleted by retention).
func (x *index) forget(off uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, m := range []map[string][]run{x.byDevice, x.byStream, x.byWindow} {
		for k, runs := range m {
			i := 0
			for i < len(runs) && runs[i].last < off {
				i++
			}
			switch {
			case i == len(runs):
				delete(m, k)
			case i > 0:
				m[k] = append(runs[:0:0], runs[i:]...)
			}
		}
	}
}

func (x *index) devices() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byDevice)
}
