package window

import (
	"slices"
	"strings"
)

// endIndex finds a stream's open windows by end, so that raising the watermark
// costs O(log g) per group of windows closed plus the sort of their keys, never
// a scan of the open ones. Windows are aligned to the epoch, so all windows of
// one size and end form one group; a stream has only a handful of groups.
type endIndex struct {
	groups map[endKey]*group
	heap   []*group // min-heap by (end, size)
	recent []*group // per size: the group of the last insert, saving a map lookup
	free   []*group
}

type endKey struct {
	end  int64
	size int // index into Engine.sizes
}

// group lists the keys with an open window of one size and end.
type group struct {
	endKey
	keys []*key
}

func (x *endIndex) init(nsizes int) {
	x.groups = map[endKey]*group{}
	x.recent = make([]*group, nsizes)
}

// insert records that k has an open window of size index size ending at end.
func (x *endIndex) insert(k *key, size int, end int64) {
	g := x.recent[size]
	if g == nil || g.end != end {
		ek := endKey{end, size}
		g = x.groups[ek]
		if g == nil {
			if n := len(x.free); n > 0 {
				g, x.free = x.free[n-1], x.free[:n-1]
			} else {
				g = &group{}
			}
			g.endKey = ek
			x.groups[ek] = g
			x.push(g)
		}
		x.recent[size] = g
	}
	g.keys = append(g.keys, k)
}

// due reports whether a group ends at or before w.
func (x *endIndex) due(w int64) bool { return len(x.heap) > 0 && x.heap[0].end <= w }

// pop removes and returns the group of the least (end, size).
func (x *endIndex) pop() *group {
	g := x.heap[0]
	n := len(x.heap) - 1
	x.heap[0] = x.heap[n]
	x.heap[n] = nil
	x.heap = x.heap[:n]
	for i := 0; ; {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && less(x.heap[c+1], x.heap[c]) {
			c++
		}
		if !less(x.heap[c], x.heap[i]) {
			break
		}
		x.heap[i], x.heap[c] = x.heap[c], x.heap[i]
		i = c
	}
	delete(x.groups, g.endKey)
	if x.recent[g.size] == g {
		x.recent[g.size] = nil
	}
	return g
}

func (x *endIndex) push(g *group) {
	x.heap = append(x.heap, g)
	for i := len(x.heap) - 1; i > 0; {
		p := (i - 1) / 2
		if !less(x.heap[i], x.heap[p]) {
			break
		}
		x.heap[i], x.heap[p] = x.heap[p], x.heap[i]
		i = p
	}
}

// release returns a popped group for reuse.
func (x *endIndex) release(g *group) {
	clear(g.keys)
	g.keys = g.keys[:0]
	x.free = append(x.free, g)
}

func less(a, b *group) bool {
	return a.end < b.end || a.end == b.end && a.size < b.size
}

// raise sets the stream's watermark to w and closes the windows it passes.
func (e *Engine) raise(s *stream, w int64) {
	s.w, s.hasW = w, true
	if s.pendingEnd <= w || s.ends.due(w) {
		// A pending event may go to a window that closes now, and may create
		// it: apply them all first.
		e.flush()
		if s.ends.due(w) {
			e.closeDue(s)
		}
	}
}

// closeDue closes every window of s with end ≤ s.w in the documented order: by
// end, size (the heap), then device id (the sort; "" first), and start, which
// is the same for all windows of a group. If OnClose panics the Engine is left
// inconsistent and must be discarded.
func (e *Engine) closeDue(s *stream) {
	e.closing = true
	defer func() { e.closing = false }()
	for s.ends.due(s.w) {
		g := s.ends.pop()
		slices.SortFunc(g.keys, func(a, b *key) int { return strings.Compare(a.device, b.device) })
		start := g.end - e.sizes[g.size]
		for _, k := range g.keys {
			w := e.take(k, g.size, start)
			e.open--
			for _, p := range e.parents[g.size] {
				pw := e.find(k, p, floor(start, e.sizes[p]))
				if pw == nil {
					panic("window: a closing window's parent is not open")
				}
				pw.merge(&w)
			}
			if k.open == 0 && k != s.site {
				s.keys.remove(k)
			}
			if e.onClose != nil {
				// The window is gone: its buckets move to the Result.
				sk := &Sketch{m: e.m, sketchData: w.sk}
				e.onClose(e.result(s.name, k.device, &w, sk, true))
			}
		}
		s.ends.release(g)
	}
}
