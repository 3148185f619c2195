package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"math"
	"sync"
	"time"
)

// dedup remembers recent (device, id) pairs, and the content of recent id-less
// events whose device gave the ts, so that a device's retry of an event
// already stored is acknowledged without being stored again
// (docs/format/dedup.md).
//
// The keys live in a ring in insertion order, which is also their expiry
// order, and an open-addressing table (linear probing) maps each key to its
// place in the ring. A key leaves the table by backward shifting, so the
// table never fills with deletion markers: the set is a sliding window
// whose keys all leave again, where a Go map's probe sequences grew long
// (docs/BENCHMARKS.md, "Exactly once for id-less events"). Neither holds a
// pointer, so the garbage collector does not scan them.
type dedup struct {
	window int64 // milliseconds
	max    int
	// seeds are the keys of the hash: random for a new set, those of the
	// store's index file for a set loaded from it.
	seeds [2]sipKey

	mu sync.Mutex
	// ring holds the keys in insertion order, ring[head&(len-1)] the oldest
	// and ring[(tail-1)&(len-1)] the newest; its length is a power of two.
	ring       []dedupEntry // guarded by mu
	head, tail uint64       // guarded by mu
	// slots is the table: 0 for an empty slot, else 1 + a place in ring in
	// the low 32 bits and the key's tag in the high 32 (see tag). Its length
	// is a power of two, twice the ring's.
	slots []uint64 // guarded by mu
	live  int      // guarded by mu; keys in the table
	// claims holds the claims whose writes have not finished, by sequence
	// number; an entry's key is pending while its claim is here.
	claims    map[uint64]*claim // guarded by mu
	lastClaim uint64            // guarded by mu
	evicted   uint64            // guarded by mu; keys forgotten early because of max
	warmed    uint64            // guarded by mu; a sink for warm's loads
}

// dedupKey is a 128-bit hash (two SipHash sums) of an id with its device, or
// of an id-less event's content. Fixed-size keys hold no pointer and need no
// allocation.
type dedupKey [2]uint64

type orderEntry struct {
	key      dedupKey
	received int64
}

// dedupEntry is a key in the ring.
type dedupEntry struct {
	key      dedupKey
	received int64  // gone: the key has left the table
	claim    uint64 // the sequence number of the claim that added it
}

// gone marks a ring entry whose key has left the table before its turn to
// expire (a failed write, or the key added again).
const gone = math.MinInt64

// claim is one Append's pending write. Duplicates of its events wait on it.
type claim struct {
	done chan struct{}
	err  error
	seq  uint64 // its number in the set, once it has added a key
	keys []dedupKey
}

func newClaim() *claim { return &claim{done: make(chan struct{})} }

// wait returns once the claimed write has finished, with its error.
func (c *claim) wait(ctx context.Context) error {
	if c == nil {
		return nil
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newDedup(window time.Duration, max int) *dedup {
	d := &dedup{window: window.Milliseconds(), max: max, claims: map[uint64]*claim{}}
	d.resize(minRing)
	var seed [32]byte
	rand.Read(seed[:]) // never fails (crypto/rand)
	for i := range d.seeds {
		d.seeds[i] = sipKey{k0: binary.LittleEndian.Uint64(seed[16*i:]), k1: binary.LittleEndian.Uint64(seed[16*i+8:])}
	}
	return d
}

// idKey is the key of device's event id.
func (d *dedup) idKey(device, id string) dedupKey {
	var a [256]byte
	b := append(a[:0], 'i')
	b = append(b, device...) // no device id holds a 0 byte
	b = append(b, 0)
	return d.keyOf(append(b, id...))
}

// idKeyBytes is idKey for the fields of a record read from the log.
func (d *dedup) idKeyBytes(device, id []byte) dedupKey {
	var a [256]byte
	b := append(a[:0], 'i')
	b = append(b, device...)
	b = append(b, 0)
	return d.keyOf(append(b, id...))
}

// contentKey returns the key of an id-less event record payload: a hash of
// everything in it but its received time, that is of its device, stream,
// ts, value and tags (tags are sorted in the record, so equal tags hash
// alike). A content key and an id key are hashed apart ('c' and 'i' first).
// ok is false for a payload too short to be an event record.
func (d *dedup) contentKey(p []byte) (key dedupKey, ok bool) {
	if len(p) < 2 {
		return key, false
	}
	_, n := binary.Varint(p[2:]) // ts
	if n <= 0 {
		return key, false
	}
	tsEnd := 2 + n
	_, n = binary.Varint(p[tsEnd:]) // received, left out
	if n <= 0 {
		return key, false
	}
	var a [256]byte
	b := append(a[:0], 'c')
	b = append(b, p[1:tsEnd]...)  // flags and ts
	b = append(b, p[tsEnd+n:]...) // value, device, stream, tags
	return d.keyOf(b), true
}

// keyOf hashes b into a key: two SipHash sums under the set's two keys.
func (d *dedup) keyOf(b []byte) dedupKey {
	return dedupKey{d.seeds[0].sum(b), d.seeds[1].sum(b)}
}

// keyCheck is one event's key in checkAll.
type keyCheck struct {
	key      dedupKey
	received int64
	at       int  // the event's place in its batch, for the caller
	dup      bool // set by checkAll
}

// checkAll checks a batch's keys in turn, as checkKeyLocked does, under one lock:
// it sets each one's dup, and returns the claims of other writes the
// duplicates wait for and how many duplicates there were.
func (d *dedup) checkAll(checks []keyCheck, c *claim) (waits []*claim, dups int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.warm(checks)
	for i := range checks {
		k := &checks[i]
		prior, dup := d.checkKeyLocked(k.key, k.received, c)
		if !dup {
			continue
		}
		k.dup = true
		dups++
		if prior != nil && prior != c && (len(waits) == 0 || waits[len(waits)-1] != prior) {
			waits = append(waits, prior)
		}
	}
	return waits, dups
}

// warm loads what checking the keys will read — their home slots, the ring
// entries those point at, and the slots of as many keys next to expire — in
// loops whose loads do not depend on one another, so that the processor
// waits for their cache misses together rather than one by one.
func (d *dedup) warm(checks []keyCheck) {
	mask := uint64(len(d.slots) - 1)
	var sum uint64
	for i := range checks {
		sum += d.slots[checks[i].key[0]&mask]
	}
	for i := range checks {
		if s := d.slots[checks[i].key[0]&mask]; s != 0 {
			sum += uint64(d.entry(s).received)
		}
	}
	rmask := uint64(len(d.ring) - 1)
	for p := d.head; p < d.tail && p-d.head < uint64(len(checks)); p++ {
		sum += d.slots[d.ring[p&rmask].key[0]&mask]
	}
	d.warmed = sum
}

// checkKeyLocked returns the claim of the write that holds key and true if
// the key was seen within the window (the claim nil once that write is
// durable); otherwise it records the key under c and returns false.
func (d *dedup) checkKeyLocked(key dedupKey, received int64, c *claim) (*claim, bool) {
	if slot, ok := d.find(key); ok {
		e := d.entry(d.slots[slot])
		if abs(received-e.received) <= d.window {
			return d.claims[e.claim], true // nil once durable
		}
		d.removeAt(slot) // expired, but not yet pruned: added anew below
	}
	if c.seq == 0 {
		d.lastClaim++
		c.seq = d.lastClaim
		d.claims[c.seq] = c
	}
	d.insertLocked(key, received, c.seq)
	c.keys = append(c.keys, key)
	return nil, false
}

// restore records a pair found in the log on open.
func (d *dedup) restore(device, id []byte, received int64, _ uint64) {
	d.restoreKey(d.idKeyBytes(device, id), received)
}

// restoreKey records a key found in the log on open.
func (d *dedup) restoreKey(key dedupKey, received int64) {
	d.mu.Lock()
	if slot, ok := d.find(key); ok {
		d.removeAt(slot)
	}
	d.insertLocked(key, received, 0)
	d.mu.Unlock()
}

// insertLocked adds a key that is not in the table, newest in the ring, and
// then expires what is due.
func (d *dedup) insertLocked(key dedupKey, received int64, claim uint64) {
	if d.tail-d.head == uint64(len(d.ring)) {
		n := len(d.ring)
		if d.live >= n/2 { // else dropping the gone entries makes room
			n *= 2
		}
		d.resize(n)
	}
	at := d.tail & uint64(len(d.ring)-1)
	d.ring[at] = dedupEntry{key: key, received: received, claim: claim}
	d.tail++
	d.place(key, at)
	d.live++
	d.pruneLocked(received - d.window)
}

// tag is the part of a key a table slot keeps: the low 32 bits of its
// first half, of which the low bits are its home slot. A lookup reads the
// ring, a cache miss, only for a slot whose tag matches, and a removal finds
// each key's home without reading the ring at all.
func tag(key dedupKey) uint64 { return key[0] << 32 }

// place puts ring place at in the table under key.
func (d *dedup) place(key dedupKey, at uint64) {
	mask := uint64(len(d.slots) - 1)
	i := key[0] & mask
	for d.slots[i] != 0 {
		i = (i + 1) & mask
	}
	d.slots[i] = tag(key) | (at + 1)
}

// replace puts ring place at in the table under key, in the slot of the
// same key if it holds one (whose ring entry is then gone), else in the
// first empty slot of its run: one probe where find and place are two.
func (d *dedup) replace(key dedupKey, at uint64) {
	mask := uint64(len(d.slots) - 1)
	t := tag(key)
	i := key[0] & mask
	for ; d.slots[i] != 0; i = (i + 1) & mask {
		if s := d.slots[i]; s&^0xffffffff == t && d.entry(s).key == key {
			d.entry(s).received = gone
			d.live--
			break
		}
	}
	d.slots[i] = t | (at + 1)
}

// find returns the table slot holding key.
func (d *dedup) find(key dedupKey) (uint64, bool) {
	mask := uint64(len(d.slots) - 1)
	t := tag(key)
	for i := key[0] & mask; ; i = (i + 1) & mask {
		s := d.slots[i]
		if s == 0 {
			return 0, false
		}
		if s&^0xffffffff == t && d.ring[uint32(s)-1].key == key {
			return i, true
		}
	}
}

// entry returns the ring entry of a table slot's value.
func (d *dedup) entry(s uint64) *dedupEntry { return &d.ring[uint32(s)-1] }

// removeAt takes the key in table slot i out of the table, marks its ring
// entry gone, and shifts back the keys after it in its probe run that may
// move closer to their home slot, so that no lookup needs a marker to step
// over.
func (d *dedup) removeAt(i uint64) {
	d.entry(d.slots[i]).received = gone
	d.live--
	mask := uint64(len(d.slots) - 1)
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		s := d.slots[j]
		if s == 0 {
			break
		}
		// The key at j may fill the hole at i unless its home slot lies
		// cyclically after i, up to j.
		home := s >> 32 & mask
		if (j-home)&mask >= (j-i)&mask {
			d.slots[i] = s
			i = j
		}
	}
	d.slots[i] = 0
}

// removeEntry takes the key of the ring entry at place at out of the table.
func (d *dedup) removeEntry(at uint64) {
	mask := uint64(len(d.slots) - 1)
	for i := d.ring[at].key[0] & mask; ; i = (i + 1) & mask {
		if uint32(d.slots[i]) == uint32(at+1) {
			d.removeAt(i)
			return
		}
	}
}

// minRing is the ring's length in a new set; it doubles as keys arrive.
const minRing = 1024

// resize gives the set a ring of n places (a power of two, at least the
// keys in it) and a table twice that, keeping the order.
func (d *dedup) resize(n int) {
	ring := make([]dedupEntry, n)
	var k uint64
	for p := d.head; p < d.tail; p++ {
		if e := d.ring[p&uint64(len(d.ring)-1)]; e.received != gone {
			ring[k] = e
			k++
		}
	}
	d.ring, d.head, d.tail = ring, 0, k
	d.slots = make([]uint64, 2*n)
	for p := range k {
		d.place(ring[p].key, p)
	}
}

// pruneLocked forgets keys received before cutoff, and the oldest beyond max.
func (d *dedup) pruneLocked(cutoff int64) {
	rmask := uint64(len(d.ring) - 1)
	for d.head < d.tail {
		at := d.head & rmask
		e := &d.ring[at]
		if e.received != gone {
			over := d.live > d.max
			if e.received >= cutoff && !over {
				break
			}
			if over && e.received >= cutoff {
				d.evicted++
			}
			d.removeEntry(at)
		}
		d.head++
	}
}

// settle finishes a claim: its keys are no longer pending. If the write
// failed they are forgotten, so that the device's retry is stored.
func (d *dedup) settle(c *claim, err error) {
	d.mu.Lock()
	delete(d.claims, c.seq)
	if err != nil {
		for _, k := range c.keys {
			if slot, ok := d.find(k); ok && d.entry(d.slots[slot]).claim == c.seq {
				d.removeAt(slot)
			}
		}
	}
	d.mu.Unlock()
	c.keys = nil
	c.err = err
	close(c.done)
}

// reserve makes room for n keys, before the set is restored.
func (d *dedup) reserve(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live == 0 && n > len(d.ring) {
		d.resize(ringFor(n))
	}
}

// ringFor is the length of a ring for n keys.
func ringFor(n int) int {
	r := minRing
	for r < n {
		r *= 2
	}
	return r
}

func (d *dedup) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live
}

// Evicted returns how many ids were forgotten before their window ended
// because the set was full.
func (d *dedup) evictedCount() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.evicted
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
