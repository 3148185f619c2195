package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"slices"
	"sync"
	"time"
)

// dedup remembers recent (device, id) pairs, and the content of recent id-less
// events whose device gave the ts, so that a device's retry of an event
// already stored is acknowledged without being stored again
// (docs/format/dedup.md).
type dedup struct {
	window int64 // milliseconds
	max    int
	// seeds are the keys of the hash: random for a new set, those of the
	// store's index file for a set loaded from it.
	seeds [2]sipKey

	mu sync.Mutex
	// m maps each key remembered to its received time. It holds no
	// pointer, so the garbage collector does not scan it.
	m map[dedupKey]int64 // guarded by mu
	// pending holds the keys whose write has not finished, with its claim;
	// a key leaves it when its claim settles.
	pending map[dedupKey]*claim // guarded by mu
	order   []orderEntry        // guarded by mu; insertion order, for expiry
	head    int                 // guarded by mu; first live element of order
	evicted uint64              // guarded by mu; keys forgotten early because of max
}

// dedupKey is a 128-bit hash (two SipHash sums) of an id with its device, or
// of an id-less event's content. Fixed-size keys hold no pointer and need no
// allocation.
type dedupKey [2]uint64

type orderEntry struct {
	key      dedupKey
	received int64
}

// claim is one Append's pending write. Duplicates of its events wait on it.
type claim struct {
	done chan struct{}
	err  error
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
	d := &dedup{window: window.Milliseconds(), max: max, m: map[dedupKey]int64{}, pending: map[dedupKey]*claim{}}
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

// check returns the prior claim and true if (device, id) was seen within the
// window; otherwise it records the pair under c and returns false.
func (d *dedup) check(device, id string, received int64, c *claim) (*claim, bool) {
	return d.checkKey(d.idKey(device, id), received, c)
}

// checkKey is check for a key already made (an id's or a content key).
func (d *dedup) checkKey(key dedupKey, received int64, c *claim) (*claim, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.m[key]; ok && abs(received-r) <= d.window {
		return d.pending[key], true // nil once durable
	}
	d.insertLocked(key, received, c)
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
	d.insertLocked(key, received, nil)
	d.mu.Unlock()
}

func (d *dedup) insertLocked(key dedupKey, received int64, c *claim) {
	d.m[key] = received
	if c != nil {
		d.pending[key] = c
	}
	d.order = append(d.order, orderEntry{key: key, received: received})
	d.pruneLocked(received - d.window)
}

// pruneLocked forgets pairs received before cutoff, and the oldest beyond max.
func (d *dedup) pruneLocked(cutoff int64) {
	for d.head < len(d.order) {
		o := d.order[d.head]
		over := len(d.m) > d.max
		if o.received >= cutoff && !over {
			break
		}
		if r, ok := d.m[o.key]; ok && r == o.received {
			delete(d.m, o.key)
			if over && o.received >= cutoff {
				d.evicted++
			}
		}
		d.order[d.head] = orderEntry{}
		d.head++
	}
	if d.head > 1024 && d.head*2 > len(d.order) {
		d.order = append(d.order[:0], d.order[d.head:]...)
		d.head = 0
	}
}

// settle finishes a claim: its keys are no longer pending. If the write
// failed they are forgotten, so that the device's retry is stored.
func (d *dedup) settle(c *claim, err error) {
	d.mu.Lock()
	for _, k := range c.keys {
		if d.pending[k] == c {
			delete(d.pending, k)
			if err != nil {
				delete(d.m, k)
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
	if len(d.m) == 0 && n > 0 {
		d.m = make(map[dedupKey]int64, n)
		d.order = slices.Grow(d.order, n)
	}
}

func (d *dedup) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
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
