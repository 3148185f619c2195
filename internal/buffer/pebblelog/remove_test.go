package pebblelog

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

func all(h []uint64) []uint64 { return h }

func offsets(recs []rec) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.off
	}
	return out
}

func offRange(from, to uint64) []uint64 {
	var out []uint64
	for off := from; off < to; off++ {
		out = append(out, off)
	}
	return out
}

// TestRemoveAccounting: the stored bytes drop by exactly the removed records'
// (also across a reopen), the first offset moves past removed first records,
// and removing the last records does not give their offsets out again.
func TestRemoveAccounting(t *testing.T) {
	const n = 1000
	per := int64(100 + recordOverhead)
	dir := t.TempDir()
	reg := buffer.NewMetrics(nil)
	l, err := Open(buffer.Options{Dir: dir, MaxBytes: 256 << 10, Metrics: reg}) // a mark every 2 KiB
	require.NoError(t, err)
	for range n / 10 {
		batch := make([][]byte, 10)
		for j := range batch {
			batch[j] = make([]byte, 100)
		}
		_, err := l.Append(batch...)
		require.NoError(t, err)
	}
	require.Equal(t, n*per, l.BytesFrom(0))

	want := offRange(0, 50) // a run: one range deletion
	for off := uint64(100); off < 500; off += 2 {
		want = append(want, off)
	}
	want = append(want, offRange(990, n)...)
	removed, err := l.Remove(want, all)
	require.NoError(t, err)
	require.Equal(t, want, removed)
	kept := buffer.Difference(offRange(0, n), removed)

	check := func(what string) {
		require.Equal(t, uint64(50), l.FirstOffset(), what)
		require.Equal(t, uint64(n), l.NextOffset(), what)
		require.Equal(t, int64(len(kept))*per, l.BytesFrom(l.FirstOffset()), what)
		require.Equal(t, int64(len(kept))*per, l.BytesFrom(0), what)
		for _, off := range []uint64{60, 300, 501, 700, 989} {
			exact := int64(len(kept)-sortIndex(kept, off)) * per
			require.InDelta(t, float64(exact), float64(l.BytesFrom(off)), float64(l.chunk), "%s: from %d", what, off)
		}
		require.Equal(t, kept, offsets(readAll(t, l, 0)), what)
	}
	check("after Remove")
	require.Equal(t, float64(len(removed)), testutil.ToFloat64(reg.RemovedRecords))
	require.Equal(t, float64(int64(len(kept))*per), testutil.ToFloat64(reg.Bytes))
	require.NoError(t, l.Close())

	l = openT(t, dir, 256<<10)
	defer l.Close()
	check("after reopen")
	off, err := l.Append(make([]byte, 100))
	require.NoError(t, err)
	require.Equal(t, uint64(n), off, "offsets of removed last records are not reused")
}

func sortIndex(s []uint64, v uint64) int {
	i, _ := slices.BinarySearch(s, v)
	return i
}

// TestRemoveEverything: with every record removed the engine is empty but
// keeps its offsets, also across a reopen.
func TestRemoveEverything(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 256<<10)
	for i := range 300 {
		_, err := l.Append(payload(fmt.Sprint(i), 200))
		require.NoError(t, err)
	}
	removed, err := l.Remove(offRange(0, 300), all)
	require.NoError(t, err)
	require.Len(t, removed, 300)
	require.Equal(t, uint64(300), l.FirstOffset())
	require.Zero(t, l.BytesFrom(l.FirstOffset()))
	require.Empty(t, readAll(t, l, 0))
	require.NoError(t, l.Close())

	l = openT(t, dir, 256<<10)
	defer l.Close()
	require.Equal(t, uint64(300), l.FirstOffset())
	require.Equal(t, uint64(300), l.NextOffset())
	require.Zero(t, l.BytesFrom(0))
	require.Empty(t, readAll(t, l, 0))
	off, err := l.Append(payload("again", 200))
	require.NoError(t, err)
	require.Equal(t, uint64(300), off)
	require.Equal(t, int64(200+recordOverhead), l.BytesFrom(0))
	requireDense(t, readAll(t, l, 0), 300, 301)
}

// TestRemoveThenRetention: retention cutting at marks whose records were
// removed keeps the first offset on a record held, the stored bytes within
// keep, and a store that opens again the same.
func TestRemoveThenRetention(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 256<<10)
	var removed []uint64
	for round := range 20 {
		for i := range 50 {
			_, err := l.Append(payload(fmt.Sprint(round, i), 300+i*7))
			require.NoError(t, err)
		}
		recs := readAll(t, l, 0)
		require.Equal(t, recs[0].off, l.FirstOffset(), "round %d: retention leaves the first offset on a record held", round)
		var want []uint64
		for off := l.FirstOffset(); off < l.DurableOffset(); off++ {
			if off%3 != 0 || off%7 == 0 {
				continue
			}
			want = append(want, off)
		}
		got, err := l.Remove(want, all)
		require.NoError(t, err)
		removed = append(removed, got...)
		recs = readAll(t, l, 0)
		require.NotEmpty(t, recs)
		require.Equal(t, recs[0].off, l.FirstOffset(), "round %d: Remove leaves the first offset on a record held", round)
	}
	slices.Sort(removed)
	require.Len(t, slices.Compact(slices.Clone(removed)), len(removed), "no record is removed twice")
	first, next := l.FirstOffset(), l.NextOffset()
	require.Positive(t, first, "retention ran")
	require.NotZero(t, first%3, "the first offset is a record held")
	require.LessOrEqual(t, l.BytesFrom(first), int64(l.keep))
	kept := buffer.Difference(offRange(first, next), removed)
	require.Equal(t, kept, offsets(readAll(t, l, 0)))
	bytes := l.BytesFrom(first)
	require.NoError(t, l.Close())

	l = openT(t, dir, 256<<10)
	defer l.Close()
	require.Equal(t, first, l.FirstOffset())
	require.Equal(t, next, l.NextOffset())
	require.Equal(t, bytes, l.BytesFrom(first))
	require.Equal(t, kept, offsets(readAll(t, l, 0)))
}

// TestRemoveRetentionDuringConfirm: retention that wants hidden records while
// confirm runs waits for the Remove; once it is done, retention hands the
// records confirm did not choose to OnUnreadDeleted, and not the removed ones.
func TestRemoveRetentionDuringConfirm(t *testing.T) {
	var mu sync.Mutex
	var reported []uint64
	l, err := Open(buffer.Options{Dir: t.TempDir(), MaxBytes: 256 << 10,
		OnUnreadDeleted: func(from, to uint64, r buffer.RecordReader) {
			mu.Lock()
			defer mu.Unlock()
			for {
				off, _, err := r.Next()
				if errors.Is(err, io.EOF) {
					return
				}
				require.NoError(t, err)
				reported = append(reported, off)
			}
		}})
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.CommitCursor("slow", 0))
	for i := range 200 {
		_, err := l.Append(payload(fmt.Sprint(i), 500))
		require.NoError(t, err)
	}
	require.Zero(t, l.FirstOffset())
	want := append(offRange(0, 10), offRange(20, 30)...)
	removed, err := l.Remove(want, func(h []uint64) []uint64 {
		batch := make([][]byte, 100)
		for i := range batch {
			batch[i] = payload(fmt.Sprint("more", i), 500)
		}
		_, err := l.Append(batch...)
		require.NoError(t, err)
		require.Zero(t, l.FirstOffset(), "retention waits for the Remove")
		return h[:10]
	})
	require.NoError(t, err)
	require.Equal(t, offRange(0, 10), removed)
	for i := range 100 {
		_, err := l.Append(payload(fmt.Sprint("after", i), 500))
		require.NoError(t, err)
	}
	first := l.FirstOffset()
	require.Greater(t, first, uint64(30), "retention caught up")
	mu.Lock()
	defer mu.Unlock()
	for _, off := range offRange(0, 10) {
		require.NotContains(t, reported, off, "removed records are not reported as deleted unread")
	}
	for off := uint64(10); off < first; off++ {
		require.Equal(t, 1, count(reported, off), "offset %d reported once as deleted unread", off)
	}
}

func count(s []uint64, v uint64) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// TestRemoveFailed: a Remove on a failed engine writes nothing; a failed
// delete batch fails the engine and leaves the records hidden.
func TestRemoveFailed(t *testing.T) {
	dir := t.TempDir()
	fault := &faultFS{}
	l, err := open(buffer.Options{Dir: dir}, func(o *pebble.Options) {
		o.FS = errorfs.Wrap(vfs.Default, fault)
	})
	require.NoError(t, err)
	for i := range 20 {
		_, err := l.Append(payload(fmt.Sprint(i), 100))
		require.NoError(t, err)
	}
	removed, err := l.Remove([]uint64{3, 4, 5}, func(h []uint64) []uint64 {
		fault.on.Store(true)
		return h
	})
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.Empty(t, removed)
	require.ErrorIs(t, l.Err(), errorfs.ErrInjected)
	require.Equal(t, buffer.Difference(offRange(0, 20), []uint64{3, 4, 5}), offsets(readAll(t, l, 0)),
		"records of a failed Remove stay hidden")
	fault.on.Store(false)
	_, err = l.Remove([]uint64{6}, all)
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.NoError(t, l.Close())

	l = openT(t, dir, 0)
	defer l.Close()
	recs := readAll(t, l, 0)
	require.Equal(t, uint64(20), l.NextOffset())
	require.Subset(t, offsets(recs), buffer.Difference(offRange(0, 20), []uint64{3, 4, 5}))
}
