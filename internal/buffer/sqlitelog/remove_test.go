package sqlitelog

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

func confirmAll(h []uint64) []uint64 { return h }

func span(from, to uint64) []uint64 {
	var s []uint64
	for off := from; off < to; off++ {
		s = append(s, off)
	}
	return s
}

// appendSized appends n records of 100 bytes, 50 per Append.
func appendSized(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i += 50 {
		batch := make([][]byte, min(50, n-i))
		for j := range batch {
			batch[j] = fmt.Appendf(nil, "%06d%094d", int(l.NextOffset())+j, 0)
		}
		_, err := l.Append(batch...)
		require.NoError(t, err)
	}
}

// The stored-bytes counters after a Remove: FirstOffset moves past removed
// first rows, BytesFrom drops by exactly the removed rows' bytes (exact at the
// marks), and a reopen finds the same first offset, bytes and next offset,
// also when the newest rows were removed.
func TestRemoveAccounting(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	appendSized(t, l, 5000)
	per := int64(100 + rowOverhead)
	require.Greater(t, len(l.marks), 3, "marks to check")

	gone := slices.Concat(span(0, 3), span(2500, 2600), span(4990, 5000))
	removed, err := l.Remove(append(slices.Clone(gone), 7000), confirmAll)
	require.NoError(t, err)
	require.Equal(t, gone, removed)
	held := func(from uint64) int64 {
		n := int64(0)
		for off := max(from, 3); off < 5000; off++ {
			if _, found := slices.BinarySearch(gone, off); !found {
				n++
			}
		}
		return n * per
	}
	require.Equal(t, uint64(3), l.FirstOffset())
	require.Equal(t, uint64(3), l.Stats().FirstOffset)
	require.Equal(t, uint64(5000), l.NextOffset())
	require.Equal(t, held(0), l.BytesFrom(0))
	require.Equal(t, held(3), l.BytesFrom(l.FirstOffset()))
	for _, m := range l.marks {
		require.Equal(t, held(m.off), l.BytesFrom(m.off), "exact at the mark at %d", m.off)
	}
	for _, off := range []uint64{1, 17, 2499, 2550, 2600, 4000, 4989, 4995} {
		require.InDelta(t, float64(held(off)), float64(l.BytesFrom(off)), float64(100*per), "offset %d", off)
	}
	require.Equal(t, float64(len(gone)), testutil.ToFloat64(l.m.RemovedRecords))
	require.NoError(t, l.Close())

	l = open(t, dir, 0)
	defer l.Close()
	require.Equal(t, uint64(3), l.FirstOffset())
	require.Equal(t, uint64(5000), l.NextOffset(), "offsets of removed newest records are not reused")
	require.Equal(t, held(0), l.BytesFrom(0))
	off, err := l.Append([]byte("next"))
	require.NoError(t, err)
	require.Equal(t, uint64(5000), off)
	offs, _ := readAll(t, l, 0)
	require.Len(t, offs, 5000-len(gone)+1)
}

// Removing every record leaves an empty engine whose offsets go on.
func TestRemoveAll(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	appendSized(t, l, 100)
	removed, err := l.Remove(span(0, 100), confirmAll)
	require.NoError(t, err)
	require.Equal(t, span(0, 100), removed)
	require.Equal(t, uint64(100), l.FirstOffset())
	require.Equal(t, int64(0), l.BytesFrom(0))
	offs, _ := readAll(t, l, 0)
	require.Empty(t, offs)
	require.NoError(t, l.Close())
	l = open(t, dir, 0)
	defer l.Close()
	require.Equal(t, uint64(100), l.FirstOffset())
	require.Equal(t, uint64(100), l.NextOffset())
	require.Equal(t, int64(0), l.BytesFrom(0))
}

// Retention over gaps Remove left: it counts rows, not offsets, moves the
// first offset to a row it kept, does not hand removed records to
// OnUnreadDeleted, and leaves the rows a Remove has hidden alone until the
// Remove is done.
func TestRemoveAndRetention(t *testing.T) {
	var mu sync.Mutex
	var reported []uint64
	m := buffer.NewMetrics(nil)
	l, err := Open(buffer.Options{Dir: t.TempDir(), MaxBytes: 64 << 10, Metrics: m,
		OnUnreadDeleted: func(from, to uint64, r buffer.RecordReader) {
			mu.Lock()
			defer mu.Unlock()
			for {
				off, _, err := r.Next()
				if errors.Is(err, io.EOF) {
					return
				}
				require.NoError(t, err)
				require.True(t, off >= from && off < to)
				reported = append(reported, off)
			}
		}})
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.CommitCursor("c", 0))
	appendSized(t, l, 400) // 400 × 124 bytes: below 64 KiB

	removed, err := l.Remove(span(10, 20), confirmAll)
	require.NoError(t, err)
	require.Equal(t, span(10, 20), removed)
	require.Zero(t, testutil.ToFloat64(m.RetentionRecords))

	// Records 20…29 are hidden while confirm appends enough for retention
	// to want them: it deletes only the rows below them.
	removed, err = l.Remove(span(20, 30), func(h []uint64) []uint64 {
		appendSized(t, l, 300)
		require.Equal(t, uint64(20), l.FirstOffset(), "retention ran up to the hidden rows")
		return h
	})
	require.NoError(t, err)
	require.Equal(t, span(20, 30), removed)
	appendSized(t, l, 50) // retention catches up

	first := l.FirstOffset()
	require.Greater(t, first, uint64(30))
	offs, _ := readAll(t, l, 0)
	require.Equal(t, first, offs[0], "the first offset is a row held")
	require.Equal(t, span(first, 750), offs)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, slices.Concat(span(0, 10), span(30, first)), reported, "removed records are not reported")
	require.Equal(t, float64(first-20), testutil.ToFloat64(m.RetentionRecords), "rows, not offsets")
	require.Equal(t, float64(len(reported)), testutil.ToFloat64(m.RetentionUnread))
	require.Equal(t, int64(750-first)*(100+rowOverhead), l.BytesFrom(0))
	require.Equal(t, float64(20), testutil.ToFloat64(m.RemovedRecords), "rows the DELETEs took")
}

// Remove passes over what it does not hold and what is not durable, and
// refuses offsets out of order; a closed engine removes nothing.
func TestRemoveArguments(t *testing.T) {
	l := open(t, t.TempDir(), 0)
	appendSized(t, l, 10)
	_, err := l.Remove([]uint64{3, 1}, confirmAll)
	require.Error(t, err)
	called := false
	removed, err := l.Remove([]uint64{10, 11}, func(h []uint64) []uint64 { called = true; return h })
	require.NoError(t, err)
	require.Empty(t, removed)
	require.False(t, called, "nothing held: confirm is not called")
	removed, err = l.Remove([]uint64{2, 2, 5}, confirmAll)
	require.NoError(t, err)
	require.Equal(t, []uint64{2, 5}, removed)
	require.NoError(t, l.Close())
	_, err = l.Remove([]uint64{1}, confirmAll)
	require.ErrorIs(t, err, buffer.ErrClosed)
}

// A removal whose transaction fails deletes nothing: Remove returns the error,
// the engine is in the failed state, the confirmed records stay hidden until
// it is opened again, and then they are all there.
func TestRemoveFailedCommit(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	appendSized(t, l, 100)
	removed, err := l.Remove(span(10, 20), func(h []uint64) []uint64 {
		l.beforeCommit = func() error { return errors.New("injected fsync failure") }
		return h[:5]
	})
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.Empty(t, removed)
	require.ErrorContains(t, l.Err(), "injected")
	offs, _ := readAll(t, l, 0)
	require.Equal(t, slices.Concat(span(0, 10), span(15, 100)), offs, "confirmed records stay hidden, the others are shown again")
	require.NoError(t, l.Close())

	l = open(t, dir, 0)
	defer l.Close()
	offs, _ = readAll(t, l, 0)
	require.Equal(t, span(0, 100), offs, "nothing was deleted")
	require.Equal(t, int64(100*(100+rowOverhead)), l.BytesFrom(0))
}
