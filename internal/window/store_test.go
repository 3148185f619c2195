package window

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// storeModel is what a store must hold: the count of each bucket index.
type storeModel map[int32]uint64

// encode is the store encoding (sketch_codec.go) of the model, written
// independently of store.appendBinary.
func (m storeModel) encode() []byte {
	idx := slices.Sorted(maps.Keys(m))
	dst := binary.AppendUvarint(nil, uint64(len(idx)))
	for j, i := range idx {
		if j == 0 {
			dst = binary.AppendVarint(dst, int64(i))
		} else {
			dst = binary.AppendUvarint(dst, uint64(i-idx[j-1]))
		}
		dst = binary.AppendUvarint(dst, m[i])
	}
	return dst
}

// storeOf builds a store holding the model's counts by adds and incs.
func storeOf(m storeModel) store {
	var s store
	for _, i := range slices.Sorted(maps.Keys(m)) {
		s.add(i)
		if m[i] > 1 {
			s.inc(i-s.off, m[i]-1)
		}
	}
	return s
}

func checkStore(t *testing.T, s *store, m storeModel, what string) {
	t.Helper()
	for j := range s.n {
		require.Equal(t, m[s.off+j], s.count(j), "%s: bucket %d", what, s.off+j)
	}
	for i, c := range m {
		require.True(t, i >= s.off && i < s.off+s.n, "%s: bucket %d (count %d) outside [%d, %d)", what, i, c, s.off, s.off+s.n)
	}
	require.Equal(t, m.encode(), s.appendBinary(nil), "%s: encoding", what)
	if len(m) > 0 {
		lo, hi, ok := s.bounds()
		require.True(t, ok, what)
		require.Equal(t, slices.Min(slices.Collect(maps.Keys(m))), lo, what)
		require.Equal(t, slices.Max(slices.Collect(maps.Keys(m))), hi, what)
		var most uint64
		for _, c := range m {
			most = max(most, c)
		}
		require.LessOrEqual(t, most, laneMask[s.width], "%s: width %d holds the counts", what, s.width)
		if s.width > 0 {
			require.Greater(t, most, laneMask[s.width-1], "%s: width %d is the least that holds them", what, s.width)
		}
	}
	d := decoder{b: s.appendBinary(nil)}
	var total uint64
	r := d.store(defaultMapping, &total)
	require.NoError(t, d.err, what)
	require.Equal(t, s.appendBinary(nil), r.appendBinary(nil), "%s: decoded store re-encodes the same", what)
}

// TestStoreWidths takes a bucket's count across every width boundary, by
// single adds and by merges, in a store inline and in one spilled to big.
func TestStoreWidths(t *testing.T) {
	for _, spread := range []int32{1, 40} { // inline; big
		for _, n := range []uint64{255, 256, 1<<16 - 1, 1 << 16, 1<<32 - 1, 1 << 32, 1 << 40, 1 << 63} {
			what := fmt.Sprintf("spread %d, count %d", spread, n)
			m := storeModel{}
			for i := range spread {
				m[100+i] = uint64(i) + 1
			}
			s := storeOf(m)
			// Single adds, past 255 where n allows.
			k := min(300, n-2)
			for range k {
				s.add(100)
			}
			m[100] += k
			checkStore(t, &s, m, what+", adds")
			// A merge taking it to n − 1, then adds to n and one more.
			om := storeModel{90: 7}
			if rest := n - 1 - m[100]; rest > 0 {
				om[100] = rest
			}
			o := storeOf(om)
			s.merge(&o)
			for i, c := range om {
				m[i] += c
			}
			checkStore(t, &s, m, what+", merge")
			s.add(100)
			m[100]++
			checkStore(t, &s, m, what+", add to n")
			s.add(100)
			m[100]++
			checkStore(t, &s, m, what+", add past n")
		}
	}
}

// TestStoreMergeWidths merges stores of every pair of widths, inline or big,
// overlapping or not, either way round, against the model.
func TestStoreMergeWidths(t *testing.T) {
	counts := []uint64{1, 300, 70_000, 5_000_000_000}
	for _, ca := range counts {
		for _, cb := range counts {
			for _, spreadA := range []int32{1, 3, 30} {
				for _, spreadB := range []int32{1, 3, 30} {
					for _, shift := range []int32{-50, -2, 0, 2, 50} {
						ma, mb := storeModel{}, storeModel{}
						for i := range spreadA {
							ma[i] = ca
						}
						for i := range spreadB {
							mb[shift+i] = cb + uint64(i)
						}
						a, b := storeOf(ma), storeOf(mb)
						what := fmt.Sprintf("counts %d, %d, spreads %d, %d, shift %d", ca, cb, spreadA, spreadB, shift)
						bBefore := b.appendBinary(nil)
						a.merge(&b)
						for i, c := range mb {
							ma[i] += c
						}
						checkStore(t, &a, ma, what)
						require.Equal(t, bBefore, b.appendBinary(nil), "%s: the merged store is unchanged", what)
					}
				}
			}
		}
	}
}

// TestStoreRandom runs random adds, merges and clones against the model.
func TestStoreRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	rounds := 300
	if testing.Short() || raceEnabled {
		rounds = 60
	}
	for round := range rounds {
		m := storeModel{}
		var s store
		center := rng.Int32N(2000) - 1000
		width := rng.Int32N(60) + 1
		for op := range 400 {
			switch r := rng.IntN(10); {
			case r < 7:
				i := center + rng.Int32N(width) - width/2
				s.add(i)
				m[i]++
			case r < 9:
				om := storeModel{}
				for range rng.IntN(8) {
					om[center+rng.Int32N(2*width)-width] = rng.Uint64N(1 << (8 * rng.IntN(5)))
				}
				for i, c := range om {
					if c == 0 {
						delete(om, i)
					}
				}
				o := storeOf(om)
				s.merge(&o)
				for i, c := range om {
					m[i] += c
				}
			default:
				c := s.clone()
				c.add(center)
				checkStore(t, &s, m, fmt.Sprintf("round %d, op %d: the original after a write to its clone", round, op))
			}
			if op%50 == 0 {
				checkStore(t, &s, m, fmt.Sprintf("round %d, op %d", round, op))
			}
		}
		checkStore(t, &s, m, fmt.Sprintf("round %d, end", round))
	}
}
