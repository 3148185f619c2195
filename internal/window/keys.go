package window

import "hash/maphash"

// keyTable maps device ids to keys: open addressing with linear probing, at
// most half full, the full 64-bit hash kept beside each key. It stands in for
// a Go map so that a lookup is a short inlined loop touching one table slot and
// then the key itself, whose name sits next to its hot window: flush runs a
// batch of these and their cache misses overlap. The hash seed is random; no
// result depends on it.
type keyTable struct {
	seed  maphash.Seed
	slots []keySlot // len is a power of two, or 0
	n     int
}

type keySlot struct {
	hash uint64
	k    *key // nil: empty
}

const minKeySlots = 16

func newKeyTable() keyTable { return keyTable{seed: maphash.MakeSeed()} }

func (t *keyTable) hash(device string) uint64 { return maphash.String(t.seed, device) }

// get returns the key of device, or nil.
func (t *keyTable) get(device string) *key {
	if t.n == 0 {
		return nil
	}
	return t.getHash(device, t.hash(device))
}

// getHash is get with the hash of device already computed.
func (t *keyTable) getHash(device string, h uint64) *key {
	mask := uint64(len(t.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.k == nil {
			return nil
		}
		if s.hash == h && s.k.device == device {
			return s.k
		}
	}
}

// home returns the key in the home slot of hash h, most likely the key of the
// device with that hash; nil if the slot is empty.
func (t *keyTable) home(h uint64) *key {
	if t.n == 0 {
		return nil
	}
	return t.slots[h&uint64(len(t.slots)-1)].k
}

// put adds k, whose device must not be in the table.
func (t *keyTable) put(k *key) {
	if 2*(t.n+1) > len(t.slots) {
		t.resize(max(minKeySlots, 2*len(t.slots)))
	}
	t.insert(t.hash(k.device), k)
	t.n++
}

func (t *keyTable) insert(h uint64, k *key) {
	mask := uint64(len(t.slots) - 1)
	i := h & mask
	for t.slots[i].k != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = keySlot{h, k}
}

// remove deletes k, which must be in the table.
func (t *keyTable) remove(k *key) {
	mask := uint64(len(t.slots) - 1)
	i := t.hash(k.device) & mask
	for t.slots[i].k != k {
		if t.slots[i].k == nil {
			panic("window: removing a key that is not in the table")
		}
		i = (i + 1) & mask
	}
	// Backward-shift deletion: move up every later slot of the cluster whose
	// home position does not lie cyclically in (i, j].
	for j := (i + 1) & mask; t.slots[j].k != nil; j = (j + 1) & mask {
		home := t.slots[j].hash & mask
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = keySlot{}
	t.n--
	if len(t.slots) > minKeySlots && 8*t.n < len(t.slots) {
		t.resize(len(t.slots) / 2)
	}
}

func (t *keyTable) resize(n int) {
	old := t.slots
	t.slots = make([]keySlot, n)
	for _, s := range old {
		if s.k != nil {
			t.insert(s.hash, s.k)
		}
	}
}

// all calls f for every key, in no particular order.
func (t *keyTable) all(f func(*key)) {
	for _, s := range t.slots {
		if s.k != nil {
			f(s.k)
		}
	}
}
