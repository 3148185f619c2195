package enginetest

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// removeRecords is how many records the Remove subtests append: enough for
// several sealed units (segments) below the native log's active one.
const removeRecords = 20_000

// appendNumbered appends records whose payload names their offset.
func appendNumbered(t *testing.T, e buffer.Engine, n int) {
	t.Helper()
	for i := 0; i < n; i += 100 {
		batch := make([][]byte, 0, 100)
		for j := i; j < min(i+100, n); j++ {
			id := strconv.FormatUint(e.NextOffset()+uint64(j-i), 10)
			batch = append(batch, makePayload(id, payloadSize(id, 48, 96)))
		}
		_, err := e.Append(batch...)
		require.NoError(t, err)
	}
}

// requireNumbered requires recs to be exactly the offsets of want, each
// payload intact and naming its offset.
func requireNumbered(t *testing.T, recs []record, want []uint64, what string) {
	t.Helper()
	got := make([]uint64, len(recs))
	for i, r := range recs {
		got[i] = r.off
		id, ok := parsePayload(r.payload)
		require.True(t, ok, "%s: record %d intact", what, r.off)
		require.Equal(t, strconv.FormatUint(r.off, 10), id, "%s: record %d holds its own payload", what, r.off)
	}
	require.Equal(t, want, got, what)
}

func asRemover(t *testing.T, e buffer.Engine) buffer.Remover {
	t.Helper()
	rm, ok := e.(buffer.Remover)
	require.True(t, ok, "%T does not implement buffer.Remover", e)
	return rm
}

// testRemove: Remove hides the records before confirm, deletes only what
// confirm returned, frees their space, leaves every other record readable
// (by readers opened before and after), and the result survives a reopen with
// no offset reused.
func testRemove(t *testing.T, open Opener) {
	dir := t.TempDir()
	e := openEngine(t, open, dir, bigMaxBytes)
	rm := asRemover(t, e.Engine)
	appendNumbered(t, e, removeRecords)
	requireIdle(t, e)
	next := e.NextOffset()
	all := make([]uint64, 0, next)
	for off := e.FirstOffset(); off < next; off++ {
		all = append(all, off)
	}
	sizeBefore := e.BytesFrom(e.FirstOffset())

	// A reader half-way through when the records go.
	early := e.NewReader(0)
	defer early.Close()
	var earlyGot []record
	for len(earlyGot) < 3000 {
		off, p, err := early.Next()
		require.NoError(t, err)
		earlyGot = append(earlyGot, record{off: off, payload: slices.Clone(p)})
	}

	var want []uint64
	for off := uint64(0); off < next; off += 3 {
		want = append(want, off)
	}
	want = append(want, next+1, next+4) // not held: passed over
	var hidden, confirmed []uint64
	// A reader that reaches a hidden record while confirm runs waits: it
	// returns nothing hidden before confirm has returned, and afterwards
	// every record that stays, the ones shown again included.
	decided := make(chan struct{})
	waiter := make(chan []record, 1)
	removed, err := rm.Remove(want, func(h []uint64) []uint64 {
		hidden = slices.Clone(h)
		require.True(t, slices.IsSorted(h), "hidden offsets ascend")
		for _, off := range h {
			require.Less(t, off, next, "an offset not held is not hidden")
			_, found := slices.BinarySearch(want, off)
			require.True(t, found, "only asked-for offsets are hidden: %d", off)
		}
		started := make(chan struct{})
		go func() {
			r := e.NewReader(0)
			defer r.Close()
			close(started)
			var got []record
			for {
				off, p, err := r.Next()
				if errors.Is(err, io.EOF) {
					waiter <- got
					return
				}
				if err != nil {
					t.Errorf("reader during Remove: %v", err)
					waiter <- got
					return
				}
				select {
				case <-decided:
				default:
					if _, isHidden := slices.BinarySearch(h, off); isHidden {
						t.Errorf("offset %d returned while hidden", off)
					}
				}
				got = append(got, record{off: off, payload: slices.Clone(p)})
			}
		}()
		<-started
		time.Sleep(20 * time.Millisecond) // let it reach the first hidden record
		for _, off := range h {
			if off%2 == 0 {
				confirmed = append(confirmed, off)
			}
		}
		// confirm may append to the engine (the node writes its loss
		// ledger here, before the records go).
		appendNumbered(t, e, 1)
		all = append(all, next)
		next++
		close(decided) // a moment early: the reader may return shown records from here on
		return confirmed
	})
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(hidden), len(want)/2, "most of the asked-for records, all in sealed units, are hidden")
	require.Equal(t, confirmed, removed, "exactly the confirmed records are removed")
	kept := buffer.Difference(all, removed)
	requireNumbered(t, <-waiter, kept, "a reader that waited during Remove")
	requireNumbered(t, readAll(t, e, 0), kept, "read after Remove")
	require.Less(t, e.BytesFrom(e.FirstOffset()), sizeBefore, "removing records frees their bytes")

	// The early reader goes on from where it was, without the removed records.
	for {
		off, p, err := early.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		earlyGot = append(earlyGot, record{off: off, payload: slices.Clone(p)})
	}
	i, _ := slices.BinarySearch(kept, earlyGot[2999].off+1)
	requireNumbered(t, earlyGot, append(slices.Clone(all[:3000]), kept[i:]...), "reader opened before Remove")

	// Removed records are not hidden or removed twice.
	again, err := rm.Remove(removed, func(h []uint64) []uint64 {
		require.Empty(t, h, "removed records are not held any more")
		return h
	})
	require.NoError(t, err)
	require.Empty(t, again)
	// A confirm that keeps everything removes nothing.
	none, err := rm.Remove(kept[:100], func([]uint64) []uint64 { return nil })
	require.NoError(t, err)
	require.Empty(t, none)
	requireNumbered(t, readAll(t, e, 0), kept, "read after a Remove that confirmed nothing")

	e.shut(t)
	e = openEngine(t, open, dir, bigMaxBytes)
	requireIdle(t, e)
	require.Equal(t, next, e.NextOffset(), "offsets are never reused")
	requireNumbered(t, readAll(t, e, 0), kept, "read after reopen")
	requireNumbered(t, readAll(t, e, 4500), kept[sortIndex(kept, 4500):], "read from the middle after reopen")
	first, err := e.Append(makePayload(strconv.FormatUint(next, 10), 50))
	require.NoError(t, err)
	require.Equal(t, next, first)
	e.shut(t)
}

func sortIndex(s []uint64, v uint64) int {
	i, _ := slices.BinarySearch(s, v)
	return i
}

// testRemoveConcurrent removes records while appenders and a tailing reader
// run: the reader returns offsets in ascending order and every record that was
// not removed, and at the end the engine holds exactly the others.
func testRemoveConcurrent(t *testing.T, open Opener) {
	e := openEngine(t, open, t.TempDir(), bigMaxBytes)
	rm := asRemover(t, e.Engine)
	var wg sync.WaitGroup
	wg.Add(2)
	appended := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(appended)
		for range removeRecords / 100 {
			batch := make([][]byte, 100)
			for j := range batch {
				batch[j] = makePayload("c", 64)
			}
			if _, err := e.Append(batch...); err != nil {
				t.Errorf("append: %v", err)
				return
			}
		}
	}()
	var tail []uint64
	go func() {
		defer wg.Done()
		r := e.NewReader(0)
		defer r.Close()
		done := false
		for {
			off, _, err := r.Next()
			if errors.Is(err, io.EOF) {
				if done {
					return
				}
				select {
				case <-appended:
					done = true // one more pass to the end
				default:
					ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
					_ = e.WaitDurable(ctx, r.Position()+1)
					cancel()
				}
				continue
			}
			if err != nil {
				t.Errorf("tail: %v", err)
				return
			}
			tail = append(tail, off)
		}
	}()
	var removed []uint64
	for round := uint64(0); ; round++ {
		durable := e.DurableOffset()
		var want []uint64
		for off := round % 5; off < durable; off += 5 {
			want = append(want, off)
		}
		got, err := rm.Remove(want, func(h []uint64) []uint64 { return h })
		require.NoError(t, err)
		removed = append(removed, got...)
		if durable >= removeRecords {
			break
		}
	}
	wg.Wait()
	slices.Sort(removed)
	require.Len(t, slices.Compact(slices.Clone(removed)), len(removed), "no record is removed twice")
	require.Equal(t, uint64(removeRecords), e.NextOffset())
	all := make([]uint64, removeRecords)
	for i := range all {
		all[i] = uint64(i)
	}
	kept := buffer.Difference(all, removed)
	recs := readAll(t, e, 0)
	got := make([]uint64, len(recs))
	for i, r := range recs {
		got[i] = r.off
	}
	require.Equal(t, kept, got, "the engine holds exactly the records not removed")
	require.True(t, slices.IsSorted(tail), "the tailing reader returns offsets in order")
	require.Len(t, slices.Compact(slices.Clone(tail)), len(tail), "the tailing reader returns no offset twice")
	require.Empty(t, buffer.Difference(kept, tail), "the tailing reader returns every record not removed")
}
