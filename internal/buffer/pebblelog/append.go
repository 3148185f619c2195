package pebblelog

import (
	"encoding/binary"
	"fmt"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// Append adds payloads as consecutive records and returns the offset of the
// first, once all of them are in a batch committed with pebble.Sync. On error
// none of them may be treated as stored: the engine has failed or is closed.
// The payloads must not be modified until Append returns.
func (l *Log) Append(payloads ...[]byte) (uint64, error) {
	n := 0
	for _, p := range payloads {
		if len(p) == 0 || len(p) > buffer.MaxRecordSize {
			return 0, fmt.Errorf("%w: %d bytes", buffer.ErrTooLarge, len(p))
		}
		n += len(p)
	}
	full := func() bool { return l.fill.bytes > l.opts.MaxPendingBytes }
	return l.commits.Append(len(payloads), full, func(first uint64) *buffer.Ack {
		g := l.fill
		g.payloads = append(g.payloads, payloads...)
		g.bytes += n
		g.next = first + uint64(len(payloads))
		return &g.Ack
	})
}

// commitGroup is what the single committer goroutine (buffer.RunCommitter,
// started by open) does with each record group, one after the other in offset
// order: commit it, apply retention, then acknowledge its appenders. The
// committer is the only writer that adds records, which is what keeps the
// durable offset moving over a contiguous prefix (docs/format/pebble.md,
// Writing); besides it only Remove writes records (deletions), index marks and
// the meta key, under writeMu.
func (l *Log) commitGroup(g *group) {
	// writeMu keeps Remove's delete batch out of the commit and the
	// retention after it (remove.go). It is released once a failure is
	// recorded, so that Remove writes nothing after a failed commit.
	l.writeMu.Lock()
	err := l.commit(g)
	var retErr error
	if err == nil {
		// Before the appenders return, so that FirstOffset and what
		// readers find agree once no append is in flight.
		retErr = l.retain(g.first)
	}

	l.commits.Lock()
	err = l.commits.CommittedLocked(g.next, err)
	if retErr != nil {
		// The group is durable and acknowledged; nothing after it.
		l.commits.FailLocked(retErr)
	}
	l.commits.Unlock()
	l.writeMu.Unlock()
	g.Finish(err)
	l.recycle(g)
}

// takeLocked takes the group being filled, unless it is empty, and makes the
// spare group the one being filled. The commits' lock must be held.
func (l *Log) takeLocked() (*group, bool) {
	g := l.fill
	if len(g.payloads) == 0 {
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

// recycle keeps a committed group's slice for reuse once its waiters have been
// woken (they only read its Ack, which is not reused).
func (l *Log) recycle(g *group) {
	if cap(g.payloads) > 1<<16 {
		return
	}
	clear(g.payloads) // drop the references to the appenders' payloads
	n := &group{Ack: buffer.NewAck(), payloads: g.payloads[:0]}
	l.commits.Lock()
	if l.spare == nil {
		l.spare = n
	}
	l.commits.Unlock()
}

// commit writes g's records, the index marks among them and the meta key in one
// batch committed with pebble.Sync. Only the committer calls it.
func (l *Log) commit(g *group) error {
	l.idxMu.RLock()
	cum := l.cum
	var lastMark uint64
	haveMark := len(l.index) > 0
	if haveMark {
		lastMark = l.index[len(l.index)-1].cum
	}
	l.idxMu.RUnlock()

	if err := l.checkSpace(g); err != nil {
		return err
	}
	b := l.db.NewBatch()
	var key [9]byte
	var val [8]byte
	var marks []mark
	off := g.first
	stored := uint64(0)
	for _, p := range g.payloads {
		if !haveMark || cum-lastMark >= l.chunk {
			binary.BigEndian.PutUint64(val[:], cum)
			if err := b.Set(indexKey(key[:0], off), val[:], nil); err != nil {
				b.Close()
				return fmt.Errorf("batch: %w", err)
			}
			marks = append(marks, mark{off: off, cum: cum})
			haveMark, lastMark = true, cum
		}
		if err := b.Set(recordKey(key[:0], off), p, nil); err != nil {
			b.Close()
			return fmt.Errorf("batch: %w", err)
		}
		sz := uint64(len(p)) + recordOverhead
		cum += sz
		stored += sz
		off++
	}
	if err := b.Set(metaKey, metaValue(g.next, cum), nil); err != nil {
		b.Close()
		return fmt.Errorf("batch: %w", err)
	}
	start := time.Now()
	if err := catchFatal(func() error { return b.Commit(pebble.Sync) }); err != nil {
		// The batch is not reused or closed: Pebble may still hold it.
		return fmt.Errorf("commit records %d…%d: %w", g.first, g.next-1, err)
	}
	l.m.FsyncSeconds.Observe(time.Since(start).Seconds())
	_ = b.Close()

	l.idxMu.Lock()
	l.index = append(l.index, marks...)
	l.cum = cum
	l.end = g.next
	l.idxMu.Unlock()

	n := g.next - g.first
	l.m.CommitRecords.Observe(float64(n))
	l.m.CommitBytes.Observe(float64(stored))
	l.m.Records.Add(float64(n))
	l.setBytesMetric()
	return nil
}

// checkSpace fails a group that would leave less than l.reserve bytes free on
// the file system. Pebble treats a failed MANIFEST write in a background flush
// or compaction as fatal (the process exits), so the engine stops
// acknowledging before the disk is full rather than when it is, and leaves
// Pebble room to flush what it holds, also when the engine is opened again.
func (l *Log) checkSpace(g *group) error {
	return l.checkFree(uint64(g.bytes) + uint64(len(g.payloads))*recordOverhead)
}

// checkFree fails a write of n bytes that would leave less than l.reserve
// bytes free on the file system (checkSpace).
func (l *Log) checkFree(n uint64) error {
	du, err := l.fs.GetDiskUsage(l.dir)
	if err != nil {
		return nil // not knowable; a full disk still fails the commit
	}
	need := l.reserve + n
	if du.AvailBytes < need {
		return fmt.Errorf("%s: %d bytes free, %d needed to keep %d in reserve for pebble's flushes: %w",
			l.dir, du.AvailBytes, need, l.reserve, syscall.ENOSPC)
	}
	return nil
}
