package buffer

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Remover is implemented by engines that can delete chosen records ahead of
// retention: the buffer's pressure levels evict synced records by priority,
// downsample old events and drop the oldest pending ones (DESIGN §7).
//
// Remove deletes the records at offs (ascending). Offsets the engine does not
// hold, or cannot remove yet (the native log's active segment, records not
// yet durable), are passed over. Remove first hides the others: from then on
// no reader returns them, and a reader that reaches one waits until Remove
// has decided about it. It then calls confirm with the hidden offsets;
// confirm returns the ones that must really go (a subset, ascending) and may
// write what must be durable before they go (the loss ledger's records). The
// rest are visible again, also to a reader that waited at one: no reader
// passes over a record that stays. Remove deletes the confirmed records and
// returns the ones it deleted; on an error it returns those deleted so far,
// and the others stay hidden until the engine is opened again. confirm must
// not read the engine (its reader would wait for itself).
type Remover interface {
	Remove(offs []uint64, confirm func(hidden []uint64) []uint64) (removed []uint64, err error)
}

// Marker is implemented by readers that publish how far they have read, for
// a caller that must know, from another goroutine, which records a reader may
// have returned (the sync, whose in-flight records a removal must leave).
// SetMark makes the reader raise *m to off+1 before it returns the record at
// off, and before it looks whether that record is hidden; m never goes down.
// With Hidden's Hide before a load of m, either the reader waits at the
// hidden record or the load sees the mark past it.
type Marker interface {
	SetMark(m *atomic.Uint64)
}

// RaiseMark raises *m to off+1 (nil m: nothing). Only the reader's own
// goroutine writes m.
func RaiseMark(m *atomic.Uint64, off uint64) {
	if m != nil && m.Load() <= off {
		m.Store(off + 1)
	}
}

// Hidden is the set of offsets readers must pass over: records removed, or
// being removed. Between Hide and Settle the offsets of a Remove in progress
// are pending: a reader that reaches one waits for Settle (Skip), so that a
// record shown again is never passed over. Looking up is lock-free and costs
// two atomic loads while nothing is hidden. Engines keep one, call Skip in
// their readers' Next, and Hide/Settle in Remove (one Remove at a time).
type Hidden struct {
	mu   sync.Mutex // serialises writers
	set  atomic.Pointer[hiddenSet]
	pend atomic.Pointer[pendingSet]
}

// pendingSet is the offsets of the Remove in progress; done is closed once
// it settles.
type pendingSet struct {
	set  *hiddenSet
	done chan struct{}
}

// hiddenChunkBits is the number of offsets one bitmap chunk covers.
const hiddenChunkBits = 1 << 16

// hiddenSet is immutable once published: writers copy what they change.
type hiddenSet struct {
	chunks map[uint64]*[hiddenChunkBits / 64]uint64 // offset/hiddenChunkBits → bitmap
}

// Has reports whether off is hidden, for good or by a Remove in progress,
// without waiting.
func (h *Hidden) Has(off uint64) bool {
	if p := h.pend.Load(); p != nil && p.set.has(off) {
		return true
	}
	return h.set.Load().has(off)
}

// Skip reports whether a reader must pass over off. If off is hidden by a
// Remove in progress, it waits until that Remove settles it.
func (h *Hidden) Skip(off uint64) bool {
	if p := h.pend.Load(); p != nil && p.set.has(off) {
		<-p.done
	}
	return h.set.Load().has(off)
}

// Hide hides offs until Settle, as pending.
func (h *Hidden) Hide(offs []uint64) {
	s := &hiddenSet{chunks: map[uint64]*[hiddenChunkBits / 64]uint64{}}
	for _, off := range offs {
		k := off / hiddenChunkBits
		c := s.chunks[k]
		if c == nil {
			c = new([hiddenChunkBits / 64]uint64)
			s.chunks[k] = c
		}
		bit := off % hiddenChunkBits
		c[bit/64] |= 1 << (bit % 64)
	}
	h.pend.Store(&pendingSet{set: s, done: make(chan struct{})})
}

// Settle ends the pending Hide: removed stay hidden for good, the other
// pending offsets are visible again, and readers waiting at any of them go on.
func (h *Hidden) Settle(removed []uint64) {
	h.Add(removed)
	if p := h.pend.Swap(nil); p != nil {
		close(p.done)
	}
}

// Decide hides cand (ascending), asks confirm which must go, and settles:
// it returns the confirmed offsets, hidden for good. Should confirm panic,
// every candidate is shown again. Engines' Remove call it.
func (h *Hidden) Decide(cand []uint64, confirm func(hidden []uint64) []uint64) []uint64 {
	h.Hide(cand)
	var keep []uint64
	defer func() { h.Settle(keep) }()
	keep = Confirmed(cand, confirm(slices.Clone(cand)))
	return keep
}

func (s *hiddenSet) has(off uint64) bool {
	if s == nil {
		return false
	}
	c := s.chunks[off/hiddenChunkBits]
	if c == nil {
		return false
	}
	bit := off % hiddenChunkBits
	return c[bit/64]&(1<<(bit%64)) != 0
}

// Add hides offs for good.
func (h *Hidden) Add(offs []uint64) {
	if len(offs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	next := &hiddenSet{chunks: map[uint64]*[hiddenChunkBits / 64]uint64{}}
	if s := h.set.Load(); s != nil {
		for k, c := range s.chunks {
			next.chunks[k] = c
		}
	}
	copied := map[uint64]bool{}
	for _, off := range offs {
		k := off / hiddenChunkBits
		if !copied[k] {
			n := new([hiddenChunkBits / 64]uint64)
			if c := next.chunks[k]; c != nil {
				*n = *c
			}
			next.chunks[k], copied[k] = n, true
		}
		bit := off % hiddenChunkBits
		next.chunks[k][bit/64] |= 1 << (bit % 64)
	}
	h.publish(next)
}

// Forget drops the offsets below off (records retention has deleted since).
func (h *Hidden) Forget(below uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.set.Load()
	if s == nil {
		return
	}
	next := &hiddenSet{chunks: map[uint64]*[hiddenChunkBits / 64]uint64{}}
	for k, c := range s.chunks {
		if (k+1)*hiddenChunkBits > below {
			next.chunks[k] = c
		}
	}
	if len(next.chunks) != len(s.chunks) {
		h.publish(next)
	}
}

func (h *Hidden) publish(s *hiddenSet) {
	if len(s.chunks) == 0 {
		h.set.Store(nil)
		return
	}
	h.set.Store(s)
}

// Confirmed returns the offsets of want that are also in hidden (both
// ascending): what a Remove whose confirm returned want may delete.
func Confirmed(hidden, want []uint64) []uint64 {
	out := make([]uint64, 0, len(want))
	i := 0
	for _, w := range want {
		for i < len(hidden) && hidden[i] < w {
			i++
		}
		if i < len(hidden) && hidden[i] == w {
			out = append(out, w)
		}
	}
	return out
}

// Difference returns the offsets of all that are not in sub (both ascending).
func Difference(all, sub []uint64) []uint64 {
	out := make([]uint64, 0, len(all)-min(len(all), len(sub)))
	i := 0
	for _, a := range all {
		for i < len(sub) && sub[i] < a {
			i++
		}
		if i < len(sub) && sub[i] == a {
			continue
		}
		out = append(out, a)
	}
	return out
}
