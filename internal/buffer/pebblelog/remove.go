package pebblelog

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// removeRangeRun is the shortest run of consecutive offsets Remove deletes with
// one range deletion rather than a point deletion per record.
const removeRangeRun = 16

var _ buffer.Remover = (*Log)(nil)

// noFloor is Log.floor while no Remove has records hidden.
const noFloor = math.MaxUint64

// Remove deletes chosen durable records ahead of retention (buffer.Remover):
// the records at offs (ascending) that are held — at or above FirstOffset,
// below DurableOffset, present in the store and not already hidden — are
// hidden, confirm says which of them must go, the others are shown again, and
// the confirmed ones are deleted in one batch committed with pebble.Sync. It
// returns the offsets deleted. One Remove runs at a time; appends and readers
// go on meanwhile, and confirm may append.
//
// The delete batch runs in Remove's goroutine under writeMu, the mutex the
// committer holds for a commit and the retention after it, and never during
// confirm. Both write the meta key and the index marks from the totals kept in
// memory: a commit reads cum and the last mark, writes its batch and then
// updates them, so a Remove in between would have its lowered totals
// overwritten by the commit, or write a meta key with a stale next offset.
// Retention's excise and mark deletion must not run either while Remove finds
// which records still exist and which marks to rewrite. Taking the mutex
// rather than handing the batch to the committer leaves the commit loop as it
// is and returns Remove's errors to its caller; either way group commits wait
// for one more synced batch while a Remove commits.
//
// Stored bytes: the marks after a deleted record, and cum, are lowered by its
// stored bytes (payload + 20) in the same batch, so BytesFrom, retention and
// holdfast_log_bytes count it out at once and exactly. Its disk space comes
// back when compactions drop the record under its tombstone; Stats().Bytes
// (the Pebble directory's disk use) follows then.
//
// Retention leaves the records at and above the lowest hidden offset alone
// until Remove returns: its reader passes over hidden records, so a hidden
// record it deleted that confirm then did not choose would be lost without
// being reported to OnUnreadDeleted. The floor is set before the records are
// hidden, under writeMu, so a commit's retention either ran before (the
// records it deleted, not hidden then, were reported; they are dropped from
// the candidates) or sees the floor. The store may exceed MaxBytes meanwhile;
// the first commit after Remove returns catches up. Confirmed records found
// deleted all the same are returned as removed. On an error Remove returns
// what was deleted so far and the confirmed records stay hidden until the
// engine is opened again; a failed commit of the delete batch puts the engine
// in the failed state (the WAL is shared with the records).
func (l *Log) Remove(offs []uint64, confirm func(hidden []uint64) []uint64) ([]uint64, error) {
	l.removeMu.Lock()
	defer l.removeMu.Unlock()
	if !slices.IsSorted(offs) {
		return nil, errors.New("pebblelog: Remove needs ascending offsets")
	}
	err := l.commits.Usable()
	if err != nil {
		return nil, err
	}
	cand, err := l.removable(offs)
	if err != nil || len(cand) == 0 {
		return nil, err
	}
	l.writeMu.Lock()
	l.floor.Store(cand[0])
	first := l.first.Load()
	l.writeMu.Unlock()
	defer l.floor.Store(noFloor)
	i, _ := slices.BinarySearch(cand, first)
	if cand = cand[i:]; len(cand) == 0 {
		return nil, nil
	}
	keep := l.hidden.Decide(cand, confirm)
	if len(keep) == 0 {
		return nil, nil
	}
	return l.deleteRecords(keep)
}

// removable returns the offsets of offs (ascending), without repeats, whose
// records are held and durable and not hidden.
func (l *Log) removable(offs []uint64) ([]uint64, error) {
	lo, _ := slices.BinarySearch(offs, l.first.Load())
	hi, _ := slices.BinarySearch(offs, l.commits.DurableOffset())
	if lo >= hi {
		return nil, nil
	}
	offs = offs[lo:hi]
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbClosed {
		return nil, buffer.ErrClosed
	}
	var lb, ub [9]byte
	it, err := l.db.NewIter(&pebble.IterOptions{
		LowerBound: recordKey(lb[:0], offs[0]),
		UpperBound: recordKey(ub[:0], offs[len(offs)-1]+1),
	})
	if err != nil {
		return nil, fmt.Errorf("pebblelog: remove: %w", err)
	}
	var (
		cand  []uint64
		key   [9]byte
		at    uint64 // offset of the key the iterator is at
		valid bool
	)
	for i, off := range offs {
		if i > 0 && off == offs[i-1] || l.hidden.Has(off) {
			continue
		}
		if !valid || at < off {
			if valid = it.SeekGE(recordKey(key[:0], off)); !valid {
				break // no record at or above off
			}
			k := it.Key()
			if len(k) != 9 {
				it.Close()
				return nil, fmt.Errorf("pebblelog: remove: bad record key %x", k)
			}
			at = binary.BigEndian.Uint64(k[1:])
		}
		if at == off {
			cand = append(cand, off)
		}
	}
	if err := cmp.Or(it.Error(), it.Close()); err != nil {
		return nil, fmt.Errorf("pebblelog: remove: %w", err)
	}
	return cand, nil
}

// deleteRecords deletes the records at offs (ascending, hidden) in one synced
// batch, with the index marks and the meta key lowered by their stored bytes,
// and returns the offsets deleted (see Remove).
func (l *Log) deleteRecords(offs []uint64) ([]uint64, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	err := l.commits.Usable()
	if err != nil {
		return nil, err
	}
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbClosed {
		return nil, buffer.ErrClosed
	}

	// Retention deleted the records below the first offset since they were
	// hidden.
	first := l.first.Load()
	i, _ := slices.BinarySearch(offs, first)
	gone, offs := offs[:i], offs[i:]
	if len(offs) == 0 {
		return gone, nil
	}
	l.idxMu.RLock()
	index, cum, end := slices.Clone(l.index), l.cum, l.end
	l.idxMu.RUnlock()

	del, sizes, held, err := l.lookup(offs, first, end)
	if err != nil {
		return gone, fmt.Errorf("pebblelog: remove: %w", err)
	}
	if len(del) == 0 {
		return gone, nil
	}

	// Every mark after a deleted record drops by the stored bytes of the
	// deleted records before it; the marks below the last one at or below
	// the first record held then cover only deleted records and go.
	changed := make([]bool, len(index))
	var sub uint64
	for m, k := 0, 0; m < len(index); m++ {
		for ; k < len(del) && del[k] < index[m].off; k++ {
			sub += sizes[k]
		}
		if sub > 0 {
			index[m].cum -= sub
			changed[m] = true
		}
	}
	var total uint64
	for _, s := range sizes {
		total += s
	}
	cum -= total
	d := max(sort.Search(len(index), func(j int) bool { return index[j].off > held })-1, 0)

	b := l.db.NewBatch()
	if err := l.fillDelete(b, del, index, changed, d, end, cum); err != nil {
		b.Close()
		return gone, fmt.Errorf("pebblelog: remove: batch: %w", err)
	}
	// The batch is small (keys, marks, the meta key), but Pebble must still
	// be able to flush it: the same reserve as for appends. Running short of
	// it fails this Remove only; the next append fails the engine.
	if err := l.checkFree(uint64(b.Len())); err != nil {
		b.Close()
		return gone, fmt.Errorf("pebblelog: remove: %w", err)
	}
	if err := catchFatal(func() error { return b.Commit(pebble.Sync) }); err != nil {
		// The batch is not reused or closed: Pebble may still hold it.
		err = fmt.Errorf("remove %d records: %w", len(del), err)
		l.commits.Fail(err)
		return gone, fmt.Errorf("%w: %v", buffer.ErrFailed, err)
	}
	_ = b.Close()

	l.idxMu.Lock()
	l.index = index[d:]
	l.cum = cum
	l.idxMu.Unlock()
	if held > first {
		l.first.Store(held)
		l.hidden.Forget(held) // after the first offset moves (Reader.Next)
	}
	l.m.RemovedRecords.Add(float64(len(del)))
	l.setBytesMetric()
	l.log.Info("removed records", "records", len(del), "bytes", total, "first_offset", l.first.Load())
	return slices.Concat(gone, del), nil
}

// lookup returns the offsets of offs whose records exist, their stored bytes,
// and the first record at or above first once they are deleted (end if none).
func (l *Log) lookup(offs []uint64, first, end uint64) (del []uint64, sizes []uint64, held uint64, err error) {
	var lb, ub, key [9]byte
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: recordKey(lb[:0], first), UpperBound: recordKey(ub[:0], end)})
	if err != nil {
		return nil, nil, 0, err
	}
	for _, off := range offs {
		if !it.SeekGE(recordKey(key[:0], off)) {
			break
		}
		if bytes.Equal(it.Key(), key[:]) {
			lv := it.LazyValue()
			del = append(del, off)
			sizes = append(sizes, uint64(lv.Len())+recordOverhead)
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return nil, nil, 0, err
	}
	held = end
	j := 0
	for ok := it.SeekGE(recordKey(key[:0], first)); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 9 {
			it.Close()
			return nil, nil, 0, fmt.Errorf("bad record key %x", k)
		}
		off := binary.BigEndian.Uint64(k[1:])
		for j < len(del) && del[j] < off {
			j++
		}
		if j < len(del) && del[j] == off {
			continue
		}
		held = off
		break
	}
	if err := cmp.Or(it.Error(), it.Close()); err != nil {
		return nil, nil, 0, err
	}
	return del, sizes, held, nil
}

// fillDelete adds to b the deletion of the records at del (runs of at least
// removeRangeRun consecutive offsets as one range deletion), the deletion of
// the marks below index[d], the marks from index[d] on that changed, and the
// meta key with the durable end and the lowered cum.
func (l *Log) fillDelete(b *pebble.Batch, del []uint64, index []mark, changed []bool, d int, end, cum uint64) error {
	var k1, k2 [9]byte
	for i := 0; i < len(del); {
		j := i + 1
		for j < len(del) && del[j] == del[j-1]+1 {
			j++
		}
		if j-i >= removeRangeRun {
			if err := b.DeleteRange(recordKey(k1[:0], del[i]), recordKey(k2[:0], del[j-1]+1), nil); err != nil {
				return err
			}
		} else {
			for _, off := range del[i:j] {
				if err := b.Delete(recordKey(k1[:0], off), nil); err != nil {
					return err
				}
			}
		}
		i = j
	}
	if d > 0 {
		if err := b.DeleteRange(indexKey(k1[:0], 0), indexKey(k2[:0], index[d].off), nil); err != nil {
			return err
		}
	}
	var v [8]byte
	for m := d; m < len(index); m++ {
		if changed[m] {
			binary.BigEndian.PutUint64(v[:], index[m].cum)
			if err := b.Set(indexKey(k1[:0], index[m].off), v[:], nil); err != nil {
				return err
			}
		}
	}
	return b.Set(metaKey, metaValue(end, cum), nil)
}
