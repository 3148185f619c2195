package buffer

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// flagCompacted marks a segment rewritten without some of its records
// (docs/format/log.md, "Removing chosen records").
const flagCompacted = 1

var _ Remover = (*Log)(nil)

// testHookRemoveSnapshot, set by tests, runs right after Remove has taken its
// snapshot of the sealed segments.
var testHookRemoveSnapshot func()

// Remove deletes chosen records from sealed segments (Remover): it hides
// them, asks confirm which must go, and rewrites each segment that holds one
// without them. Records in the active segment are passed over. One Remove
// runs at a time; appends and readers go on meanwhile.
func (l *Log) Remove(offs []uint64, confirm func(hidden []uint64) []uint64) ([]uint64, error) {
	l.removeMu.Lock()
	defer l.removeMu.Unlock()
	if !slices.IsSorted(offs) {
		return nil, fmt.Errorf("buffer: Remove needs ascending offsets")
	}
	l.segMu.RLock()
	sealed := slices.Clone(l.segments[:len(l.segments)-1])
	l.segMu.RUnlock()
	if testHookRemoveSnapshot != nil {
		testHookRemoveSnapshot()
	}
	var cand []uint64
	i := 0
	for _, off := range offs {
		for i < len(sealed) && sealed[i].next <= off {
			i++
		}
		if i == len(sealed) {
			break
		}
		if off >= sealed[i].base && !l.hidden.Has(off) && (len(cand) == 0 || cand[len(cand)-1] != off) {
			cand = append(cand, off)
		}
	}
	if len(cand) == 0 {
		return nil, nil
	}
	// Retention leaves the segments alone until this Remove is done. A
	// segment it took since the snapshot is gone, its records reported as
	// retention's: they are not candidates (retention may still be reading
	// them, and would wait at a hidden one for a confirm that waits for the
	// writer it runs on).
	l.segMu.Lock()
	var busy []*segment
	kept := cand[:0:0]
	for _, seg := range sealed {
		lo, _ := slices.BinarySearch(cand, seg.base)
		hi, _ := slices.BinarySearch(cand, seg.next)
		if lo < hi && l.listedLocked(seg) {
			seg.removing = true
			busy = append(busy, seg)
			kept = append(kept, cand[lo:hi]...)
		}
	}
	l.segMu.Unlock()
	cand = kept
	defer func() {
		l.segMu.Lock()
		for _, seg := range busy {
			seg.removing = false
		}
		l.segMu.Unlock()
	}()
	if len(cand) == 0 {
		return nil, nil
	}
	keep := l.hidden.Decide(cand, confirm)

	var removed []uint64
	for _, seg := range sealed {
		lo, _ := slices.BinarySearch(keep, seg.base)
		hi, _ := slices.BinarySearch(keep, seg.next)
		if lo == hi {
			continue
		}
		n, err := l.compact(seg, keep[lo:hi])
		if err != nil {
			return removed, err
		}
		removed = append(removed, n...)
	}
	l.updateSizeMetrics()
	return removed, nil
}

// compact rewrites the sealed segment seg without the records at drop
// (ascending, all within seg) and returns the ones it held. If retention
// deleted the segment meanwhile, its records are gone already: all of drop is
// returned.
func (l *Log) compact(seg *segment, drop []uint64) ([]uint64, error) {
	// A segment opened on its seal has not been checked since it was
	// written: find and quarantine damage first, as a reader would.
	l.verify(seg)
	l.segMu.RLock()
	size, bad := seg.size, slices.Clone(seg.bad)
	l.segMu.RUnlock()
	data, err := vfs.ReadFile(l.fs, l.path(seg.name))
	if err != nil {
		if !l.listed(seg) {
			return drop, nil
		}
		return nil, fmt.Errorf("compact segment %s: %w", seg.name, err)
	}
	data = data[:min(int64(len(data)), size)]

	out := make([]byte, segmentHeaderSize, len(data))
	copy(out, segmentMagic)
	binary.LittleEndian.PutUint16(out[4:], formatVersion)
	binary.LittleEndian.PutUint16(out[6:], flagCompacted)
	binary.LittleEndian.PutUint64(out[8:], seg.base)
	var (
		sparse  []indexEntry
		found   []uint64
		lastIdx = int64(-sparseEvery)
		j       = 0
	)
	for pos := int64(segmentHeaderSize); pos < int64(len(data)); {
		if b, ok := badAt(bad, pos); ok {
			pos = b.to
			continue
		}
		n, off, ok := frameAt(data, pos)
		if !ok {
			return nil, fmt.Errorf("compact segment %s: invalid frame at byte %d", seg.name, pos)
		}
		end := pos + frameHeaderSize + int64(n)
		for j < len(drop) && drop[j] < off {
			j++
		}
		if j < len(drop) && drop[j] == off {
			found = append(found, off)
		} else {
			if int64(len(out))-lastIdx >= sparseEvery {
				sparse = append(sparse, indexEntry{off: off, pos: int64(len(out))})
				lastIdx = int64(len(out))
			}
			out = append(out, data[pos:end]...)
		}
		pos = end
	}
	if len(found) == 0 {
		return nil, nil
	}

	tmp := seg.name + ".tmp"
	if err := vfs.WriteSynced(l.fs, l.path(tmp), out); err != nil {
		l.fs.Remove(l.path(tmp))
		return nil, fmt.Errorf("compact segment %s: %w", seg.name, err)
	}
	// Rename and swap under segMu: retention unlists a segment under it
	// before deleting the file, so a segment it deleted is never brought back.
	l.segMu.Lock()
	if !l.listedLocked(seg) {
		l.segMu.Unlock()
		l.fs.Remove(l.path(tmp))
		return drop, nil
	}
	if err := l.fs.Rename(l.path(tmp), l.path(seg.name)); err != nil {
		l.segMu.Unlock()
		l.fs.Remove(l.path(tmp))
		return nil, fmt.Errorf("compact segment %s: %w", seg.name, err)
	}
	freed := seg.size - int64(len(out))
	seg.size, seg.sparse, seg.bad = int64(len(out)), sparse, nil
	seg.compacted = true
	seg.gen++
	l.segMu.Unlock()
	if err := l.fs.SyncDir(l.dir); err != nil {
		return found, fmt.Errorf("compact segment %s: fsync log dir: %w", seg.name, err)
	}
	l.writeSeal(seg) // the old seal does not match the new file
	l.m.RemovedRecords.Add(float64(len(found)))
	l.log.Info("compacted segment", "segment", seg.name, "removed", len(found), "freed_bytes", freed)
	return found, nil
}

func badAt(bad []badRange, pos int64) (badRange, bool) {
	for _, b := range bad {
		if pos >= b.from && pos < b.to {
			return b, true
		}
	}
	return badRange{}, false
}

func (l *Log) listed(seg *segment) bool {
	l.segMu.RLock()
	defer l.segMu.RUnlock()
	return l.listedLocked(seg)
}

func (l *Log) listedLocked(seg *segment) bool {
	return slices.Contains(l.segments, seg)
}
