package buffer

import (
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
// no reader returns them. It then calls confirm with the hidden offsets;
// confirm returns the ones that must really go (a subset, ascending) and may
// write what must be durable before they go (the loss ledger's records). The
// rest are visible again. Remove deletes the confirmed records and returns
// the ones it deleted; on an error it returns those deleted so far, and the
// others stay hidden until the engine is opened again.
type Remover interface {
	Remove(offs []uint64, confirm func(hidden []uint64) []uint64) (removed []uint64, err error)
}

// Hidden is a set of offsets that readers must pass over: records being
// removed, or already removed from files an older reader still has open.
// Looking up is lock-free and costs one atomic load while the set is empty.
// Engines keep one and call Has in their readers' Next.
type Hidden struct {
	mu  sync.Mutex // serialises writers
	set atomic.Pointer[hiddenSet]
}

// hiddenChunkBits is the number of offsets one bitmap chunk covers.
const hiddenChunkBits = 1 << 16

// hiddenSet is immutable once published: writers copy what they change.
type hiddenSet struct {
	chunks map[uint64]*[hiddenChunkBits / 64]uint64 // offset/hiddenChunkBits → bitmap
}

// Has reports whether off is hidden.
func (h *Hidden) Has(off uint64) bool {
	s := h.set.Load()
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

// Add hides offs.
func (h *Hidden) Add(offs []uint64) { h.update(offs, true) }

// Show makes offs visible again.
func (h *Hidden) Show(offs []uint64) { h.update(offs, false) }

func (h *Hidden) update(offs []uint64, hide bool) {
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
		c := next.chunks[k]
		if c == nil && !hide {
			continue
		}
		if !copied[k] {
			n := new([hiddenChunkBits / 64]uint64)
			if c != nil {
				*n = *c
			}
			c, next.chunks[k], copied[k] = n, n, true
		}
		bit := off % hiddenChunkBits
		if hide {
			c[bit/64] |= 1 << (bit % 64)
		} else {
			c[bit/64] &^= 1 << (bit % 64)
		}
	}
	for k := range copied {
		if isZero(next.chunks[k]) {
			delete(next.chunks, k)
		}
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

func isZero(c *[hiddenChunkBits / 64]uint64) bool {
	for _, w := range c {
		if w != 0 {
			return false
		}
	}
	return true
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
