package recovery

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSorterBounded adds 20 000 records in a shuffled order, some twice, to a
// sorter that may hold 16 KiB: it writes sorted runs, holds no more records
// than fit, and merges back every record once, in offset order.
func TestSorterBounded(t *testing.T) {
	const n, limit = 20_000, 16 << 10
	r := rand.New(rand.NewPCG(1, 2))
	payload := func(off uint64) []byte {
		return fmt.Appendf(nil, "record %d %s", off, strings.Repeat("x", int(off%50)))
	}
	offs := r.Perm(n)
	offs = append(offs, offs[:500]...) // the same records a second time
	s := newSorter(filepath.Join(t.TempDir(), "sort"), limit)
	for _, o := range offs {
		require.NoError(t, s.add(uint64(o), payload(uint64(o))))
	}
	next := uint64(0)
	require.NoError(t, s.merge(func(off uint64, p []byte) error {
		require.Equal(t, next, off)
		require.Equal(t, payload(off), p)
		next++
		return nil
	}))
	require.Equal(t, uint64(n), next)
	require.Greater(t, len(s.runs), 10)
	// At least entryBytes+len("record 0 ") bytes per record held, and one
	// per run while merging.
	require.LessOrEqual(t, s.peak, limit/(entryBytes+9)+len(s.runs))
	require.NoError(t, s.remove())
	_, err := os.Stat(s.dir)
	require.True(t, os.IsNotExist(err))
}

// TestSorterStop: errStop ends the merge without error, passing nothing more.
func TestSorterStop(t *testing.T) {
	s := newSorter(filepath.Join(t.TempDir(), "sort"), 64)
	for o := range uint64(100) {
		require.NoError(t, s.add(99-o, []byte{byte(o)}))
	}
	var got []uint64
	require.NoError(t, s.merge(func(off uint64, p []byte) error {
		if off == 10 {
			return errStop
		}
		got = append(got, off)
		return nil
	}))
	require.Len(t, got, 10)
	require.NoError(t, s.remove())
}

// TestSorterConflict: two different records at one offset are an error that
// names the offset.
func TestSorterConflict(t *testing.T) {
	s := newSorter(filepath.Join(t.TempDir(), "sort"), 64)
	for o := range uint64(20) {
		require.NoError(t, s.add(o, []byte("same")))
	}
	require.NoError(t, s.add(7, []byte("other")))
	err := s.merge(func(uint64, []byte) error { return nil })
	require.ErrorContains(t, err, "two different records at offset 7")
	require.NoError(t, s.remove())
}
