package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendFrame appends one frame to dst.
func appendFrame(dst []byte, off uint64, payload []byte) []byte {
	var h [frameHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[8:], off)
	crc := crc32.Update(0, castagnoli, h[8:16])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(h[4:], crc)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// Append adds payloads as consecutive records and returns the offset of the
// first, once all of them are fsync'd. On error none of them may be treated as
// stored: the log has failed or is closed.
func (l *Log) Append(payloads ...[]byte) (uint64, error) {
	return l.AppendAssigned(nil, payloads...)
}

// AppendAssigned is Append that also calls assigned, if not nil, with the
// first offset as soon as the records have their offsets, before they are
// durable and so before any reader can return them. It is called at most
// once, with the log's commit lock held: it must be quick and must not call
// the log. If Append then fails, the offsets it was given are never durable.
func (l *Log) AppendAssigned(assigned func(first uint64), payloads ...[]byte) (uint64, error) {
	if len(payloads) == 0 {
		return l.commits.NextOffset(), l.commits.Usable()
	}
	for _, p := range payloads {
		if len(p) == 0 || len(p) > MaxRecordSize {
			return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(p))
		}
	}
	full := func() bool { return len(l.fill.buf) > l.opts.MaxPendingBytes }
	return l.commits.Append(len(payloads), full, func(first uint64) *Ack {
		g := l.fill
		for i, p := range payloads {
			off := first + uint64(i)
			if len(g.sparse) == 0 || len(g.buf)-int(g.sparse[len(g.sparse)-1].pos) >= sparseEvery {
				g.sparse = append(g.sparse, indexEntry{off: off, pos: int64(len(g.buf))})
			}
			g.buf = appendFrame(g.buf, off, p)
		}
		g.next = first + uint64(len(payloads))
		if assigned != nil {
			assigned(first)
		}
		return &g.Ack
	})
}

// WaitDurable blocks until every offset below off is fsync'd, the log fails or
// is closed, or ctx ends.
func (l *Log) WaitDurable(ctx context.Context, off uint64) error {
	return l.commits.WaitDurable(ctx, off)
}

// writeGroup is what the log's single writer goroutine (RunCommitter, started
// by Open) does with each commit group: write and fsync it, then acknowledge
// its appenders.
func (l *Log) writeGroup(g *group) {
	err := l.commit(g)
	l.commits.Lock()
	err = l.commits.CommittedLocked(g.next, err)
	l.commits.Unlock()
	g.Finish(err)
	l.recycle(g)
}

// takeLocked takes the group being filled, unless it is empty, and makes the
// spare group the one being filled. The commits' lock must be held.
func (l *Log) takeLocked() (*group, bool) {
	g := l.fill
	if len(g.buf) == 0 {
		return nil, false
	}
	n := l.spare
	l.spare = nil
	if n == nil {
		n = newGroup()
	}
	n.first, n.next = g.next, g.next
	l.fill = n
	return g, true
}

// recycle keeps a committed group's buffers for reuse once its waiters have been
// woken (they only read its Ack, which is not reused).
func (l *Log) recycle(g *group) {
	if cap(g.buf) > 4*l.opts.MaxPendingBytes {
		return
	}
	n := &group{Ack: NewAck(), buf: g.buf[:0], sparse: g.sparse[:0]}
	l.commits.Lock()
	if l.spare == nil {
		l.spare = n
	}
	l.commits.Unlock()
}

// commit writes g to the active segment and fsyncs it, rolling the segment first
// if it is full. Only the writer goroutine calls it.
func (l *Log) commit(g *group) error {
	l.segMu.RLock()
	seg := l.segments[len(l.segments)-1]
	size, gen := seg.size, seg.gen
	l.segMu.RUnlock()
	if size >= l.opts.SegmentBytes {
		if err := l.roll(g.first); err != nil {
			return err
		}
		l.segMu.RLock()
		seg = l.segments[len(l.segments)-1]
		size, gen = seg.size, seg.gen
		l.segMu.RUnlock()
	}
	if _, err := l.active.Write(g.buf); err != nil {
		return fmt.Errorf("write segment %s: %w", seg.name, err)
	}
	start := time.Now()
	if err := l.active.Sync(); err != nil {
		return fmt.Errorf("fsync segment %s: %w", seg.name, err)
	}
	l.m.FsyncSeconds.Observe(time.Since(start).Seconds())
	l.m.CommitRecords.Observe(float64(g.next - g.first))
	l.m.CommitBytes.Observe(float64(len(g.buf)))
	l.m.Records.Add(float64(g.next - g.first))
	// In the tail before readers can see the records, so that those at the
	// live end find them there.
	l.tail.add(seg, gen, size, g.buf, l.opts.TailBytes)

	// Durable before readers can see the records: a reader never returns an
	// offset DurableOffset does not yet cover.
	l.commits.markDurable(g.next)
	l.segMu.Lock()
	for _, e := range g.sparse {
		seg.sparse = append(seg.sparse, indexEntry{off: e.off, pos: size + e.pos})
	}
	seg.size = size + int64(len(g.buf))
	seg.next = g.next
	l.segMu.Unlock()
	l.m.Bytes.Add(float64(len(g.buf)))
	return nil
}

// roll seals the active segment and starts a new one whose first offset is base,
// then applies retention.
func (l *Log) roll(base uint64) error {
	name := segmentName(base)
	f, err := l.createSegment(name, base)
	if err != nil {
		return err
	}
	if err := l.active.Close(); err != nil {
		l.log.Warn("close sealed segment", "err", err)
	}
	l.active = f
	l.segMu.Lock()
	sealed := l.segments[len(l.segments)-1]
	l.segments = append(l.segments, &segment{base: base, name: name, next: base, size: segmentHeaderSize, verified: true})
	l.segMu.Unlock()
	// The new segment's header is durable: the sealed one ends where it
	// ends now, and its seal spares the next open reading it.
	l.writeSeal(sealed)
	l.applyRetention()
	l.updateSizeMetrics()
	return nil
}

// createSegment creates a segment file with its header and makes it durable.
func (l *Log) createSegment(name string, base uint64) (vfs.File, error) {
	f, err := l.fs.Create(l.path(name))
	if err != nil {
		return nil, fmt.Errorf("create segment %s: %w", name, err)
	}
	var h [segmentHeaderSize]byte
	copy(h[:], segmentMagic)
	binary.LittleEndian.PutUint16(h[4:], formatVersion)
	binary.LittleEndian.PutUint64(h[8:], base)
	if _, err := f.Write(h[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("write segment header %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("fsync segment %s: %w", name, err)
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("fsync log dir: %w", err)
	}
	return f, nil
}

// applyRetention deletes the oldest sealed segments while the log is larger than
// MaxBytes. A deletion that fails is logged and retried at the next roll.
func (l *Log) applyRetention() {
	for {
		l.segMu.Lock()
		var total int64
		for _, s := range l.segments {
			total += s.size
		}
		if total <= l.opts.MaxBytes || len(l.segments) < 2 || l.segments[0].removing {
			// A segment whose records a Remove has hidden waits for it:
			// retention would not report hidden records as deleted unread,
			// and some may be shown again. The next roll retries.
			l.segMu.Unlock()
			return
		}
		old := l.segments[0]
		l.segments = l.segments[1:]
		l.segMu.Unlock()

		records := old.next - old.base
		unread := uint64(0)
		if slowest, ok := l.slowestCursor(); ok && slowest < old.next {
			from := max(slowest, old.base)
			unread = old.next - from
			if l.opts.OnUnreadDeleted != nil {
				r := &Reader{l: l, from: from}
				l.segMu.RLock()
				gen := old.gen
				l.segMu.RUnlock()
				if err := r.open(old, segmentHeaderSize, gen); err != nil {
					l.log.Warn("retention: cannot read the unread records it deletes", "segment", old.name, "err", err)
				} else {
					l.opts.OnUnreadDeleted(from, old.next, &segmentReader{r: r, to: old.next})
					r.Close()
				}
			}
		}
		if err := l.fs.Remove(l.path(old.name)); err != nil {
			l.log.Warn("retention: remove segment", "segment", old.name, "err", err)
		}
		l.removeSeal(old.base)
		l.hidden.Forget(old.next)
		l.m.RetentionRecords.Add(float64(records))
		l.m.RetentionUnread.Add(float64(unread))
		l.log.Info("retention deleted segment", "segment", old.name, "records", records, "unread", unread)
	}
}

// segmentReader reads one segment that retention has already taken out of the
// log's list, up to offset to.
type segmentReader struct {
	r  *Reader
	to uint64
}

func (s *segmentReader) Next() (uint64, []byte, error) {
	if s.r.from >= s.to {
		return 0, nil, io.EOF
	}
	off, p, err := s.r.Next()
	if err == nil && off >= s.to {
		return 0, nil, io.EOF // past a damaged end: the next segment's records are not deleted
	}
	return off, p, err
}
func (s *segmentReader) Position() uint64 { return s.r.Position() }
func (s *segmentReader) Close() error     { return s.r.Close() }

// DeleteBefore deletes the sealed segments whose records are all below off,
// oldest first; the active segment stays. It is the pressure levels' eviction
// of records every sink has confirmed (Evictor).
func (l *Log) DeleteBefore(off uint64) (uint64, error) {
	var deleted uint64
	for {
		l.segMu.Lock()
		if len(l.segments) < 2 || l.segments[0].next > off || l.segments[0].removing {
			l.segMu.Unlock()
			return deleted, nil
		}
		old := l.segments[0]
		l.segments = l.segments[1:]
		l.segMu.Unlock()
		if err := l.fs.Remove(l.path(old.name)); err != nil {
			return deleted, fmt.Errorf("evict segment %s: %w", old.name, err)
		}
		l.removeSeal(old.base)
		l.hidden.Forget(old.next)
		n := old.next - old.base
		deleted += n
		l.m.RetentionRecords.Add(float64(n))
		l.log.Info("evicted synced segment", "segment", old.name, "records", n)
		l.updateSizeMetrics()
	}
}
