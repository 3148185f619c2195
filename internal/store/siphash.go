package store

import "github.com/dchest/siphash"

// sipKey is a SipHash-2-4 key: the de-duplication keys are SipHash sums, a
// keyed hash whose key the store keeps in its index file, so that the set
// can be stored and loaded (docs/format/store-index.md). github.com/dchest/siphash
// computes it.
type sipKey struct{ k0, k1 uint64 }

// sum returns SipHash-2-4 of m under k.
func (k sipKey) sum(m []byte) uint64 { return siphash.Hash(k.k0, k.k1, m) }
