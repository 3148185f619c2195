package store

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// modelSet is the de-duplication set's contract written the plain way: a
// map from key to received time, and the insertion order for expiry, where
// a key added again takes its new place.
type modelSet struct {
	window, max int64
	m           map[dedupKey]int64
	place       map[dedupKey]int // the key's latest place in order
	pending     map[dedupKey]*claim
	order       []orderEntry
	popped      int // places taken out of order's front
	evicted     uint64
}

func (s *modelSet) check(key dedupKey, received int64, c *claim) (*claim, bool) {
	if r, ok := s.m[key]; ok && abs(received-r) <= s.window {
		return s.pending[key], true
	}
	s.insert(key, received, c)
	return nil, false
}

func (s *modelSet) insert(key dedupKey, received int64, c *claim) {
	s.m[key] = received
	delete(s.pending, key)
	if c != nil {
		s.pending[key] = c
	}
	s.place[key] = s.popped + len(s.order)
	s.order = append(s.order, orderEntry{key, received})
	for len(s.order) > 0 {
		o := s.order[0]
		if _, ok := s.m[o.key]; ok && s.place[o.key] == s.popped {
			over := int64(len(s.m)) > s.max
			if o.received >= received-s.window && !over {
				break
			}
			delete(s.m, o.key)
			delete(s.pending, o.key)
			if over && o.received >= received-s.window {
				s.evicted++
			}
		}
		s.order = s.order[1:]
		s.popped++
	}
}

func (s *modelSet) settle(c *claim, keys []dedupKey, err error) {
	for _, k := range keys {
		if s.pending[k] == c {
			delete(s.pending, k)
			if err != nil {
				delete(s.m, k)
			}
		}
	}
}

// TestDedupSetMatchesModel drives the set and the model with the same
// random checks (a key at a time, or a batch under one lock), restores, settled and failed writes, and compares every
// answer and, after each step, the keys held. Keys are drawn from a small
// pool so that they repeat inside and outside the window, and their table
// hashes from a few values so that probe runs are long and removals shift
// keys back across the table's wrap. The set grows its ring from the
// smallest size on.
func TestDedupSetMatchesModel(t *testing.T) {
	grown, evictions := 0, uint64(0)
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		window := int64(rng.IntN(500) + 50)
		bound := rng.IntN(3000) + 10
		d := newDedup(time.Duration(window)*time.Millisecond, bound)
		m := &modelSet{window: window, max: int64(bound), m: map[dedupKey]int64{}, place: map[dedupKey]int{}, pending: map[dedupKey]*claim{}}
		pool := rng.IntN(4000) + 20
		homes := uint64(rng.IntN(64) + 1)
		keyOf := func(n int) dedupKey {
			// key[0] picks the home slot: a few homes, some near the
			// table's end.
			return dedupKey{uint64(n)%homes*0x9e3779b97f4a7c15 | uint64(n)<<40, uint64(n)}
		}
		type open struct {
			c    *claim
			keys []dedupKey
		}
		var opens []open
		peak := 0
		now := int64(1_000_000)
		for step := range 6000 {
			if rng.IntN(4) == 0 {
				now++
			}
			received := now - int64(rng.IntN(int(window)/4+1)) // not quite monotonic
			switch r := rng.IntN(20); {
			case r < 12 || len(opens) == 0: // an Append's keys
				c := newClaim()
				o := open{c: c}
				var checks []keyCheck
				for range rng.IntN(5) + 1 {
					checks = append(checks, keyCheck{key: keyOf(rng.IntN(pool)), received: received})
				}
				// The model's answers, key by key.
				var wantWaits []*claim
				wantDup := make([]bool, len(checks))
				wantPrior := make([]*claim, len(checks))
				for i, k := range checks {
					wantPrior[i], wantDup[i] = m.check(k.key, received, c)
					if !wantDup[i] {
						o.keys = append(o.keys, k.key)
					} else if p := wantPrior[i]; p != nil && p != c && (len(wantWaits) == 0 || wantWaits[len(wantWaits)-1] != p) {
						wantWaits = append(wantWaits, p)
					}
				}
				if rng.IntN(2) == 0 { // one key at a time
					for i, k := range checks {
						gotPrior, gotDup := d.checkKey(k.key, received, c)
						require.Equal(t, wantDup[i], gotDup, "seed %d step %d: duplicate", seed, step)
						require.Same(t, wantPrior[i], gotPrior, "seed %d step %d: the claim a duplicate waits for", seed, step)
					}
				} else { // the whole batch under one lock
					waits, dups := d.checkAll(checks, c)
					n := 0
					for i := range checks {
						require.Equal(t, wantDup[i], checks[i].dup, "seed %d step %d: duplicate %d of the batch", seed, step, i)
						if wantDup[i] {
							n++
						}
					}
					require.Equal(t, n, dups, "seed %d step %d: duplicates in the batch", seed, step)
					require.Equal(t, wantWaits, waits, "seed %d step %d: the claims the batch waits for", seed, step)
				}
				opens = append(opens, o)
			case r < 18: // the oldest open write settles, or fails
				i := 0
				if rng.IntN(3) == 0 {
					i = rng.IntN(len(opens))
				}
				var err error
				if rng.IntN(5) == 0 {
					err = errors.New("write failed")
				}
				m.settle(opens[i].c, opens[i].keys, err)
				d.settle(opens[i].c, err)
				opens = append(opens[:i], opens[i+1:]...)
			default: // a key found in the log on open
				k := keyOf(rng.IntN(pool))
				d.restoreKey(k, received)
				m.insert(k, received, nil)
			}
			if step%97 == 0 {
				require.Equal(t, m.m, d.keys(), "seed %d step %d: the keys held", seed, step)
			}
			require.Equal(t, len(m.m), d.len(), "seed %d step %d", seed, step)
			require.Equal(t, m.evicted, d.evictedCount(), "seed %d step %d: evicted", seed, step)
			peak = max(peak, len(m.m))
		}
		require.Equal(t, m.m, d.keys(), "seed %d: the keys held at the end", seed)
		require.Equal(t, appendKeys([]byte("head"), d.seeds, d.stored()), d.appendStored([]byte("head")),
			"seed %d: the keys as the index file holds them", seed)
		if peak > minRing {
			require.Greater(t, len(d.ring), minRing, "seed %d: the ring grew", seed)
			grown++
		}
		evictions += m.evicted
	}
	require.Positive(t, grown, "no seed held more keys than the smallest ring")
	require.Positive(t, evictions, "no seed filled its set")
}

// appendKeys is the index file's encoding of a set (format/store-index.md)
// written plainly, from its seeds and stored(): what appendStored must give.
func appendKeys(b []byte, seeds [2]sipKey, keys []orderEntry) []byte {
	for _, k := range seeds {
		b = binary.LittleEndian.AppendUint64(b, k.k0)
		b = binary.LittleEndian.AppendUint64(b, k.k1)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, e := range keys {
		b = binary.LittleEndian.AppendUint64(b, e.key[0])
		b = binary.LittleEndian.AppendUint64(b, e.key[1])
		b = binary.LittleEndian.AppendUint64(b, uint64(e.received))
	}
	return b
}

// check is checkKey for an event id, as Append makes its key.
func (d *dedup) check(device, id string, received int64, c *claim) (*claim, bool) {
	return d.checkKey(d.idKey(device, id), received, c)
}

// checkKey checks one key under the lock, as checkAll does each of a batch.
func (d *dedup) checkKey(key dedupKey, received int64, c *claim) (*claim, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.checkKeyLocked(key, received, c)
}

// BenchmarkIndexFileKeys measures encoding a full set (1 000 000 keys) for
// the store's index file: straight from the ring (appendStored, what
// WriteSnapshot does) against copying the keys out and appending them
// (appendKeys of stored(), what it did before). Both run under the set's
// lock or the index lock, which appends wait for.
func BenchmarkIndexFileKeys(b *testing.B) {
	d := newDedup(time.Hour, 1_000_000)
	for i := range 1_200_000 {
		c := newClaim()
		d.checkKey(d.keyOf([]byte{byte(i), byte(i >> 8), byte(i >> 16), 'x'}), 1000, c)
		d.settle(c, nil)
	}
	b.Run("appendStored", func(b *testing.B) {
		for range b.N {
			d.appendStored(make([]byte, 0, 64))
		}
	})
	b.Run("appendKeys(stored)", func(b *testing.B) {
		for range b.N {
			appendKeys(make([]byte, 0, 64), d.seeds, d.stored())
		}
	})
}
