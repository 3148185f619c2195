package node

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pressure"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// What the pressure levels do to the buffer itself (DESIGN §7), with the
// records chosen by internal/pressure (plan.go) and removed through
// buffer.Remover:
//
//	critical   evict synced records, lowest priority first, until the level
//	           can clear
//	emergency  evict every synced record; downsample old pending low-priority
//	           events (one in downsample_ratio kept per stream and device)
//	full       drop the oldest drop_fraction of the pending records, critical
//	           lane last, while the buffer is still full after the above
//
// The buffer's capacity is max_bytes or the room the disk has left, whichever
// is less, so a disk filling up (by the buffer or anything else) raises the
// level like a buffer filling up; with the disk nearly full, synced records
// are evicted whatever the level.
//
// Nothing at or above the newest checkpoint's offset is removed (a restart
// replays from there), nor anything a sink may have in flight, nor a ledger
// record while unsynced. Records removed unsynced are written to the loss
// ledger, durably, before they go; a crash in between is finished at the next
// start (finishRemovals).

// Value cursors (buffer.ValuePrefix) the actions keep in the buffer.
const (
	// removingCursor is 1 + the offset at which the ledger records of the
	// latest removal start; removedCursor takes the same value once that
	// removal is done. (Cursors only move forward.)
	removingCursor = buffer.ValuePrefix + "pressure:removing"
	removedCursor  = buffer.ValuePrefix + "pressure:removed"
	// downsampledCursor is where the next downsampling starts: every older
	// pending low-priority event has been downsampled once.
	downsampledCursor = buffer.ValuePrefix + "pressure:downsampled"
)

// act carries out the actions of the current level.
func (w *pressureWatch) act(level pressure.Level) {
	tight := w.diskTight()
	if level < pressure.Critical && !tight {
		return
	}
	bound, ok := w.bound()
	if !ok || len(w.n.syncs) == 0 {
		return // a restart would replay everything, or nothing syncs
	}
	if w.unfinished != 0 {
		// The ledger records of a removal that failed stay for the next
		// start to finish it.
		bound = min(bound, w.unfinished-1)
	}
	rm, ok := w.n.buf.(buffer.Remover)
	if !ok {
		w.evictSyncedSegments(bound) // an engine that only deletes from the front
		return
	}
	t := w.mon.Thresholds()
	c, _, _ := w.capacity()
	if level >= pressure.Emergency || tight {
		w.evictSyncedSegments(bound)
		w.evictSynced(rm, bound, -1)
	} else if need := w.totalBytes() - int64((t.Critical-t.Hysteresis)*float64(c)); need > 0 {
		// Room for pending records before retention would have to delete
		// them: the buffer's total back to the critical level's clearing point.
		w.evictSynced(rm, bound, need)
	}
	if level >= pressure.Emergency {
		w.downsample(rm, bound)
	}
	if level == pressure.Full && w.utilisation() >= t.Full {
		w.drop(rm, bound)
	}
}

func (w *pressureWatch) maxBytes() int64 { return int64(w.n.cfg.Buffer.MaxBytes) }

// totalBytes is what the buffer holds, as the engine counts its records.
func (w *pressureWatch) totalBytes() int64 { return w.n.buf.BytesFrom(w.n.buf.FirstOffset()) }

// pendingBytes is what the buffer holds from the slowest sync cursor on: the
// records some sink still waits for (an estimate from above: records of a
// faster lane past that cursor count too). With no sink it is 0.
func (w *pressureWatch) pendingBytes() int64 {
	from, ok := uint64(0), false
	for _, s := range w.n.syncs {
		for _, c := range s.LaneCursors() {
			if !ok || c < from {
				from, ok = c, true
			}
		}
	}
	if !ok {
		return 0
	}
	return w.n.buf.BytesFrom(from)
}

// utilisation is the share of the buffer's capacity the pending records
// take. Synced records do not count: retention and eviction reclaim them at
// no loss, so a node whose uplink keeps up stays at normal however much
// history its buffer keeps.
func (w *pressureWatch) utilisation() float64 {
	c, _, _ := w.capacity()
	return float64(w.pendingBytes()) / float64(c)
}

// capacity is what the buffer may hold: buffer.max_bytes (or what the
// engine's retention keeps of it, buffer.Keeper), or less when the disk has
// less room: the disk space the engine takes plus the disk's free space, less
// a reserve of two segments (a segment roll and a compaction's rewrite). The
// engine's disk space is Stats.Bytes, not the bytes it counts for its
// records: SQLite and Pebble give space back later than they stop counting
// removed records. limited says the disk is the limit; free is the disk's
// free space (-1 if not measured).
func (w *pressureWatch) capacity() (c, free int64, limited bool) {
	c = w.maxBytes()
	if k, ok := w.n.buf.(buffer.Keeper); ok {
		c = min(c, k.KeepBytes()) // the engine keeps less, for its own files
	}
	free, ok := diskFree(w.n.cfg.DataDir)
	if !ok {
		return c, -1, false
	}
	if room := w.n.buf.Stats().Bytes + free - w.reserve(); room < c {
		return max(room, 1), free, true
	}
	return c, free, false
}

func (w *pressureWatch) reserve() int64 { return 2 * int64(w.n.cfg.Buffer.SegmentBytes) }

// diskTight reports a disk with less than twice the reserve free: then synced
// records are evicted whatever the level, since retention, which counts
// against max_bytes, would not make room in time.
func (w *pressureWatch) diskTight() bool {
	_, free, limited := w.capacity()
	return limited && free < 2*w.reserve()
}

// bound is the offset at and above which nothing is removed: what a restart
// would replay.
func (w *pressureWatch) bound() (uint64, bool) {
	b := w.n.buf.DurableOffset()
	if w.n.proc != nil {
		c, ok := w.n.proc.CheckpointOffset()
		if !ok {
			return 0, false // a restart would replay from the start
		}
		b = min(b, c)
	}
	return b, true
}

// sinks returns every syncer's lane cursors and how many records of a lane a
// sink may have in flight.
func (w *pressureWatch) sinks() (pressure.Sinks, int) {
	s := make(pressure.Sinks, len(w.n.syncs))
	protect := 0
	for i, sy := range w.n.syncs {
		for l := range s[i] {
			s[i][l] = ^uint64(0)
		}
		for lane, c := range sy.LaneCursors() {
			s[i][lane] = c
		}
		protect = max(protect, sy.InFlightLimit())
	}
	return s, protect
}

// names numbers the streams and devices of a scan.
type names struct {
	ids  map[string]uint32
	list []string
}

func newNames() *names { return &names{ids: map[string]uint32{}} }

func (n *names) id(b []byte) uint32 {
	if v, ok := n.ids[string(b)]; ok {
		return v
	}
	s := string(b)
	v := uint32(len(n.list))
	n.ids[s] = v
	n.list = append(n.list, s)
	return v
}

// scan reads the synced records in [from, to) as pressure items.
func (w *pressureWatch) scan(from, to uint64, nm *names) pressure.Scan {
	return func(yield func(pressure.Item) bool) error {
		r := w.n.buf.NewReader(from)
		defer r.Close()
		for {
			off, p, err := r.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if off >= to {
				return nil
			}
			lane, ok := w.n.lanes.Lane(off, p)
			if !ok {
				continue // not synced: never chosen
			}
			it := pressure.Item{Offset: off, Lane: int(lane), Bytes: int64(len(p))}
			if v, ok := event.Peek(p); ok {
				it.Event, it.Received = true, v.Received
				it.Stream, it.Device = nm.id(v.Stream), nm.id(v.DeviceID)
			} else {
				it.Ledger = event.Type(p) == event.TypeLedger
				it.Stream = nm.id([]byte(recordStream(p)))
			}
			if !yield(it) {
				return nil
			}
		}
	}
}

// evictSyncedSegments deletes whole segments every sink has confirmed (and a
// restart would not replay), oldest first, whatever their priority: the cheap
// eviction for engines that implement buffer.Evictor.
func (w *pressureWatch) evictSyncedSegments(bound uint64) {
	ev, ok := w.n.buf.(buffer.Evictor)
	if !ok {
		return
	}
	off, ok := buffer.SlowestPosition(w.n.buf.Cursors())
	if !ok {
		return
	}
	b := min(off, bound)
	n, err := ev.DeleteBefore(b)
	if err != nil {
		w.n.log.Warn("evicting synced records failed", "err", err)
		return
	}
	if n > 0 {
		w.evicted.Add(float64(n))
		w.n.log.Info("buffer pressure: evicted synced segments", "records", n, "below", b)
	}
}

// evictSynced removes synced records, lowest lane first, until need bytes
// are free (need < 0: all). Synced records lose nothing the cloud lacks: no
// ledger entry, a metric.
func (w *pressureWatch) evictSynced(rm buffer.Remover, bound uint64, need int64) {
	sinks, _ := w.sinks()
	first := w.n.buf.FirstOffset()
	key := syncedKey{first: first, bound: bound, sinks: slices.Clone(sinks)}
	if key.equal(w.nothingSynced) {
		return // nothing has been confirmed since the last look found nothing
	}
	nm := newNames()
	c, err := pressure.Synced(w.scan(first, bound, nm), sinks, need)
	if err != nil {
		w.n.log.Warn("buffer pressure: cannot read the buffer to evict synced records", "err", err)
		return
	}
	if len(c.Offsets) == 0 {
		w.nothingSynced = key
		return
	}
	removed, err := rm.Remove(c.Offsets, func(h []uint64) []uint64 { return h })
	if err != nil {
		w.n.log.Warn("buffer pressure: evicting synced records failed", "err", err)
	}
	if len(removed) > 0 {
		w.evicted.Add(float64(len(removed)))
		w.n.log.Info("buffer pressure: evicted synced records, lowest priority first", "records", len(removed))
	}
}

// syncedKey is what a look for synced records depends on.
type syncedKey struct {
	first, bound uint64
	sinks        pressure.Sinks
}

func (k syncedKey) equal(o syncedKey) bool {
	return k.first == o.first && k.bound == o.bound && slices.Equal(k.sinks, o.sinks)
}

// downsample removes old pending low-priority events, keeping one in
// downsample_ratio per stream and device, from where the last downsampling
// stopped.
func (w *pressureWatch) downsample(rm buffer.Remover, bound uint64) {
	t := w.mon.Thresholds()
	from := w.n.buf.FirstOffset()
	if c, ok := w.n.buf.Cursor(downsampledCursor); ok {
		from = max(from, c)
	}
	if from >= bound {
		return
	}
	sinks, protect := w.sinks()
	nm := newNames()
	before := time.Now().Add(-t.DownsampleAfter).UnixMilli()
	c, stop, young, err := pressure.Downsample(w.scan(from, bound, nm), sinks, protect, t.DownsampleRatio, before)
	if err != nil {
		w.n.log.Warn("buffer pressure: cannot read the buffer to downsample", "err", err)
		return
	}
	if !young {
		stop = bound
	}
	if len(c.Offsets) > 0 {
		removed, ok := w.removeUnsynced(rm, event.LossDownsampled, c, nm)
		if !ok {
			return // chosen again next time
		}
		// Chosen records left after the last one removed (the log's
		// active segment): the next downsampling starts at the first of
		// them. Not before the last removed: the events this pass kept
		// there would be thinned again. (Those left below it, a sink had
		// read: they are on their way.)
		last := removed[len(removed)-1]
		for _, off := range buffer.Difference(c.Offsets, removed) {
			if off > last {
				stop = min(stop, off)
				break
			}
		}
	}
	if stop > from {
		if err := w.n.buf.CommitCursor(downsampledCursor, stop); err != nil {
			w.n.log.Warn("buffer pressure: downsampling position not saved", "err", err)
		}
	}
}

// drop removes the oldest drop_fraction of the pending records, critical
// lane last.
func (w *pressureWatch) drop(rm buffer.Remover, bound uint64) {
	sinks, protect := w.sinks()
	nm := newNames()
	c, err := pressure.DropOldest(w.scan(w.n.buf.FirstOffset(), bound, nm), sinks, protect, w.mon.Thresholds().DropFraction)
	if err != nil {
		w.n.log.Warn("buffer pressure: cannot read the buffer to drop records", "err", err)
		return
	}
	if len(c.Offsets) > 0 {
		w.removeUnsynced(rm, event.LossDropped, c, nm)
	}
}

// removeUnsynced removes chosen pending records, writing their ledger
// records first, and returns those it removed, ok=false if none. Of the chosen records it removes
// only those no sink has read in this process (above every syncer's read
// mark for the record's lane, looked at once they are hidden): those are in
// no batch, sent or to be sent. Those a sink has read stay, to be chosen
// again if still pending. What a sink may hold from before a restart the
// choice left out already (the in-flight window from each lane's cursor).
func (w *pressureWatch) removeUnsynced(rm buffer.Remover, reason byte, c pressure.Choice, nm *names) (removed []uint64, ok bool) {
	var mark uint64
	confirm := func(hidden []uint64) []uint64 {
		// Marks first, cursors second: both only go up, and a record
		// between a sink's cursor and its mark may be on its way to it.
		marks := make([]map[uplink.Lane]uint64, len(w.n.syncs))
		cursors := make([]map[uplink.Lane]uint64, len(w.n.syncs))
		for i, s := range w.n.syncs {
			marks[i] = s.ReadMarks()
		}
		for i, s := range w.n.syncs {
			cursors[i] = s.LaneCursors()
		}
		keep := make([]uint64, 0, len(hidden))
		streams := make([]string, 0, len(hidden))
		j := 0
		for _, off := range hidden {
			for c.Offsets[j] != off {
				j++
			}
			if inFlight(cursors, marks, uplink.Lane(c.Lanes[j]), off) {
				continue
			}
			keep = append(keep, off)
			streams = append(streams, nm.list[c.Streams[j]])
		}
		if n := len(hidden) - len(keep); n > 0 {
			w.n.log.Info("buffer pressure: records a sink has read since they were chosen stay", "reason", event.LossName(reason), "records", n)
		}
		if len(keep) == 0 {
			return nil
		}
		// Should the node stop between the ledger records and the removal,
		// the next start finishes it from here. After a removal that failed,
		// the mark stays at that one: the next start finishes every removal
		// from it on.
		mark = w.n.buf.NextOffset() + 1
		if w.unfinished == 0 {
			if err := w.n.buf.CommitCursor(removingCursor, mark); err != nil {
				w.n.log.Error("buffer pressure: cannot mark a removal; nothing removed", "err", err)
				return nil
			}
		}
		if err := w.n.ledger.removed(w.n.buf, reason, keep, streams); err != nil {
			w.n.log.Error("buffer pressure: ledger records not written; nothing removed", "reason", event.LossName(reason), "err", err)
			return nil
		}
		return keep
	}
	removed, err := rm.Remove(c.Offsets, confirm)
	if err != nil {
		// The ledger lists them and they stay hidden; the next start
		// removes the rest.
		w.n.log.Error("buffer pressure: removing records failed; the next start finishes it", "reason", event.LossName(reason),
			"removed", len(removed), "err", err)
		if w.unfinished == 0 && mark != 0 {
			w.unfinished = mark
		}
		return removed, false
	}
	if mark != 0 && w.unfinished == 0 {
		if err := w.n.buf.CommitCursor(removedCursor, mark); err != nil {
			w.n.log.Warn("buffer pressure: removal not marked done", "err", err)
		}
	}
	return removed, len(removed) > 0
}

// inFlight reports whether a record of lane at off may be on its way to a
// sink: read by that sink's reader (below its mark) and not yet confirmed
// by it (at or above its cursor). A record a sink has confirmed is that
// sink's already; removing it takes it from the others only.
func inFlight(cursors, marks []map[uplink.Lane]uint64, lane uplink.Lane, off uint64) bool {
	for i, m := range marks {
		if mk, ok := m[lane]; ok && off < mk && off >= cursors[i][lane] {
			return true
		}
	}
	return false
}

// finishRemovals completes, at start-up, what the ledger accounts for from
// before the node stopped: retention's ledger records still in the intent
// file go to the buffer (recoverIntent), and for a removal whose ledger
// records were written, every record a downsampled or dropped ledger record
// lists is removed, if still held.
func (n *Node) finishRemovals() error {
	var errs []error
	if n.ledger != nil {
		if err := n.ledger.recoverIntent(n.buf); err != nil {
			errs = append(errs, fmt.Errorf("loss ledger: records lost to retention before the stop: %w", err))
		}
	}
	return errors.Join(append(errs, n.finishRemoval())...)
}

// finishRemoval completes a removal whose ledger records were written before
// the node stopped (finishRemovals).
func (n *Node) finishRemoval() error {
	v, _ := n.buf.Cursor(removingCursor)
	done, _ := n.buf.Cursor(removedCursor)
	rm, isRemover := n.buf.(buffer.Remover)
	if v <= done || !isRemover {
		return nil
	}
	var offs []uint64
	r := n.buf.NewReader(v - 1)
	for {
		_, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.Close()
			return err
		}
		if event.Type(p) != event.TypeLedger {
			continue
		}
		l, err := event.DecodeLedger(p)
		if err != nil || (l.Reason != event.LossDownsampled && l.Reason != event.LossDropped) {
			continue
		}
		for _, rg := range l.Ranges {
			for off := rg.First; off < rg.First+rg.Len; off++ {
				offs = append(offs, off)
			}
		}
	}
	r.Close()
	slices.Sort(offs)
	offs = slices.Compact(offs)
	removed, err := rm.Remove(offs, func(h []uint64) []uint64 { return h })
	if err != nil {
		return err
	}
	n.log.Info("finished a removal the ledger lists", "records", len(removed))
	return n.buf.CommitCursor(removedCursor, v)
}
