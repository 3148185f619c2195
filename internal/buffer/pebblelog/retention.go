package pebblelog

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// retain deletes the oldest records while more than l.keep stored bytes are
// held, cutting at an index mark no later than limit (the first offset of the
// group just committed, which is never deleted) nor than the floor of a Remove
// in progress (the records it has hidden stay until it is done; the store may
// exceed l.keep meanwhile, a later commit catches up). Only the committer,
// holding writeMu, and Open before starting it, call it.
//
// Records are excised (pebble.DB.Excise), not range-deleted: sstables wholly
// below the cut are dropped and one straddling it becomes a virtual sstable,
// so nothing is rewritten and the disk space comes back at once. A range
// tombstone would instead stay in the LSM until compactions carry it down,
// and with it every record it covers (measured: disk use twice as high, and
// each compaction rewriting live records). The index marks below the cut are
// then range-deleted. A crash between the two steps leaves marks below the
// first record, which Open drops.
//
// Before the excise, the records at or above the slowest cursor — those
// RetentionUnread counts — go to Options.OnUnreadDeleted with a reader that
// iterates them in the store; that reader passes over the records Remove has
// hidden (being removed, or removed).
//
// Records Remove deleted count in the records and unread numbers logged and
// in the metrics (offsets, not records), and not in the stored bytes (the
// marks no longer count them).
var _ buffer.Keeper = (*Log)(nil)

// KeepBytes is the most stored bytes retention keeps (buffer.Keeper): less
// than MaxBytes by room for Pebble's own files, so that the directory stays
// within MaxBytes.
func (l *Log) KeepBytes() int64 { return int64(l.keep) }

func (l *Log) retain(limit uint64) error {
	l.idxMu.RLock()
	idx, cum := l.index, l.cum
	l.idxMu.RUnlock()
	keep := l.keep
	if len(idx) < 2 || cum-idx[0].cum <= keep {
		return nil
	}
	limit = min(limit, l.floor.Load())
	// The oldest mark from which on at most keep bytes are held, else the newest.
	j := sort.Search(len(idx), func(j int) bool { return cum-idx[j].cum <= keep })
	j = min(j, len(idx)-1)
	for j > 0 && idx[j].off > limit {
		j--
	}
	if j == 0 {
		return nil
	}
	// The first mark may lie below the first record held (Remove deleted
	// the records between).
	first, cut := max(idx[0].off, l.first.Load()), idx[j].off
	records := cut - first
	unread := uint64(0)
	if slowest, ok := l.slowestCursor(); ok && slowest < cut {
		from := max(slowest, first)
		unread = cut - from
		if l.opts.OnUnreadDeleted != nil {
			// Before the excise: the reader sees exactly the records about to go.
			r := &Reader{l: l, from: from, to: cut, bounded: true}
			l.opts.OnUnreadDeleted(from, cut, r)
			r.Close()
		}
	}

	span := pebble.KeyRange{Start: recordKey(nil, 0), End: recordKey(nil, cut)}
	if err := catchFatal(func() error { return l.db.Excise(context.Background(), span) }); err != nil {
		return fmt.Errorf("retention: excise records %d…%d: %w", first, cut-1, err)
	}
	if err := l.deleteMarks(cut); err != nil {
		return err
	}

	// The record at cut may have been removed: the first one held is the
	// first key at or above it.
	held, err := l.firstHeld(cut)
	if err != nil {
		l.log.Warn("retention: cannot find the first record held", "from", cut, "err", err)
		held = cut
	}

	l.idxMu.Lock()
	l.index = slices.Clone(l.index[j:])
	l.idxMu.Unlock()
	l.first.Store(held)
	l.hidden.Forget(held) // after the first offset moves (Reader.Next)

	l.m.RetentionRecords.Add(float64(records))
	l.m.RetentionUnread.Add(float64(unread))
	l.setBytesMetric()
	l.log.Info("retention deleted records", "first", first, "next", cut, "records", records, "unread", unread,
		"bytes", idx[j].cum-idx[0].cum)
	return nil
}

// firstHeld returns the offset of the first record at or above from, or the
// durable end if there is none. The caller holds writeMu, or is Open.
func (l *Log) firstHeld(from uint64) (uint64, error) {
	l.idxMu.RLock()
	end := l.end
	l.idxMu.RUnlock()
	if from >= end {
		return end, nil
	}
	var lo, hi [9]byte
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: recordKey(lo[:0], from), UpperBound: recordKey(hi[:0], end)})
	if err != nil {
		return 0, err
	}
	held := end
	if it.First() {
		held = binary.BigEndian.Uint64(it.Key()[1:])
	}
	return held, cmp.Or(it.Error(), it.Close())
}

// deleteMarks deletes the index marks below off, in a batch without an fsync of
// its own: the next synced commit covers it, and if a crash loses it Open drops
// the marks again.
func (l *Log) deleteMarks(off uint64) error {
	b := l.db.NewBatch()
	if err := b.DeleteRange(indexKey(nil, 0), indexKey(nil, off), nil); err != nil {
		b.Close()
		return fmt.Errorf("batch: %w", err)
	}
	if err := catchFatal(func() error { return b.Commit(pebble.NoSync) }); err != nil {
		return fmt.Errorf("retention: delete index marks below %d: %w", off, err)
	}
	return b.Close()
}

// storedBytesLocked returns the stored bytes of the records held. idxMu must be held.
func (l *Log) storedBytesLocked() uint64 {
	if len(l.index) == 0 {
		return 0
	}
	return l.cum - l.index[0].cum
}

func (l *Log) setBytesMetric() {
	l.idxMu.RLock()
	b := l.storedBytesLocked()
	l.idxMu.RUnlock()
	l.m.Bytes.Set(float64(b))
}

// BytesFrom estimates the stored bytes (payload + 20 per record) of the records
// from offset off to the durable end: exact at index marks, interpolated
// linearly between them. Offsets already deleted count from the first one held.
// Records deleted by Remove are not counted: it lowers the marks after them
// (remove.go), so BytesFrom(FirstOffset()) is exact.
func (l *Log) BytesFrom(off uint64) int64 {
	l.idxMu.RLock()
	defer l.idxMu.RUnlock()
	idx := l.index
	if len(idx) == 0 || off >= l.end {
		return 0
	}
	// The records between the first mark and the first record held were
	// removed (their bytes are out of the marks after them): from any offset
	// up to the first held, the stored bytes are those from the first mark.
	if off <= idx[0].off || off <= l.first.Load() {
		return int64(l.cum - idx[0].cum)
	}
	// idx[j] is the last mark at or below off.
	j := sort.Search(len(idx), func(j int) bool { return idx[j].off > off }) - 1
	from := idx[j]
	to := mark{off: l.end, cum: l.cum}
	if j+1 < len(idx) {
		to = idx[j+1]
	}
	at := from.cum + uint64(float64(to.cum-from.cum)*float64(off-from.off)/float64(to.off-from.off))
	return int64(l.cum - at)
}

// slowestCursor returns the smallest cursor position, if any cursor exists.
func (l *Log) slowestCursor() (uint64, bool) {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	return buffer.SlowestPosition(l.cursors)
}
