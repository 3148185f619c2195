package node

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// lossLedger accounts for every record that leaves the buffer unsynced
// (docs/format/ledger.md): it counts them by reason and stream, in metrics and
// status, and writes ledger records — synced like the rest, critical lane
// first — so that the cloud knows which offsets will never come and why.
//
// Three paths report here: the pressure levels removing pending records
// (removed, written before the removal), the pressure levels keeping events
// out at ingest (sampled, refused), counted per stream, and retention
// deleting records some sink had not confirmed (a buffer full for too long),
// with their offset ranges. Retention's records are in the ledger-intent
// file (ledger_intent.go) before the deletion, and in the buffer soon after.
type lossLedger struct {
	log        *slog.Logger
	lost       *prometheus.CounterVec
	wake       chan struct{}
	stop       chan struct{}
	done       chan struct{}
	intentPath string                   // the ledger-intent file; "" for none (tests)
	sinks      atomic.Pointer[sinkView] // what retention's hook asks "confirmed?"; nil until the syncers run

	// fileMu serialises writes of the intent file, and the snapshots of what
	// it must hold. It is taken before mu and never held over an append.
	fileMu     sync.Mutex
	fileExists bool // guarded by fileMu

	mu        sync.Mutex
	queue     []queued                        // not yet in the buffer
	kept      map[keptKey]*event.LedgerRecord // events kept out at ingest, not yet queued
	totals    map[string]map[string]uint64    // reason → stream → records
	intent    []intentEntry                   // retention's records queued in this run, not yet in the buffer
	recovered []intentEntry                   // from the intent file at start, until recoverIntent
	seq       uint64                          // numbers intent entries
}

// queued is a ledger record waiting for the buffer; seq names its intent
// entry, 0 if it has none.
type queued struct {
	rec event.LedgerRecord
	seq uint64
}

// sinkView is what says whether every sink has confirmed a record: the lane
// rules and the syncers (their lane cursors).
type sinkView struct {
	lanes *uplink.LaneRules
	syncs []*uplink.Syncer
}

// newLossLedger returns the node's ledger; dataDir holds its intent file
// ("" for none), read here, before the buffer opens: retention may run in
// the engine's Open.
func newLossLedger(reg prometheus.Registerer, log *slog.Logger, dataDir string) *lossLedger {
	g := &lossLedger{
		log: log, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		totals: map[string]map[string]uint64{}, kept: map[keptKey]*event.LedgerRecord{},
		lost: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_lost_records_total",
			Help: "Records that left the buffer unsynced, by reason and stream; each is in a ledger record.",
		}, []string{"reason", "stream"}),
	}
	if dataDir != "" {
		g.intentPath = filepath.Join(dataDir, intentFile)
		g.loadIntent()
	}
	return g
}

// watchSinks makes retention's hook list only the records some sink of syncs
// has not confirmed. Until it is called (and with no syncer), every record
// retention deletes from the slowest cursor on is listed.
func (g *lossLedger) watchSinks(lanes *uplink.LaneRules, syncs []*uplink.Syncer) {
	if len(syncs) > 0 {
		g.sinks.Store(&sinkView{lanes: lanes, syncs: syncs})
	}
}

// onUnreadDeleted is the engines' retention hook. It runs on the engine's
// committer (or in its Open) before the deletion is durable, so it must not
// append: it reads the records about to be deleted, makes one ledger record
// per stream with the offset ranges of those some sink has not confirmed,
// writes them to the intent file (fsync'd before it returns) and queues them
// for the buffer.
func (g *lossLedger) onUnreadDeleted(from, to uint64, r buffer.RecordReader) {
	type deleted struct {
		off    uint64
		stream string
		lane   uplink.Lane
		synced bool
	}
	v := g.sinks.Load()
	var recs []deleted
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			g.log.Error("loss ledger: cannot read records retention deletes; counting them under *", "from", from, "to", to, "err", err)
			break
		}
		d := deleted{off: off, stream: recordStream(p)}
		if v != nil {
			d.lane, d.synced = v.lanes.Lane(off, p)
		}
		recs = append(recs, d)
	}
	// The cursors after the records: they only move up, and the later,
	// the fewer records are listed that a sink has after all.
	var cursors []map[uplink.Lane]uint64
	if v != nil {
		for _, s := range v.syncs {
			cursors = append(cursors, s.LaneCursors())
		}
	}
	e := newRanged(event.LossEvictedUnsynced)
	for _, d := range recs {
		if d.synced && confirmedByAll(cursors, d.lane, d.off) {
			continue
		}
		e.add(d.stream, d.off)
	}
	lrs := e.records()

	g.fileMu.Lock()
	g.mu.Lock()
	changed := len(lrs) > 0
	// What an earlier run's entries list in [from, to) was still held
	// (Pebble's Open applies retention): this deletion accounts for it.
	for i := range g.recovered {
		if l := withoutOffsets(g.recovered[i].rec, from, to); l.Count != g.recovered[i].rec.Count {
			g.recovered[i].rec, changed = l, true
		}
	}
	g.recovered = slices.DeleteFunc(g.recovered, func(e intentEntry) bool { return e.rec.Count == 0 })
	for _, l := range lrs {
		g.seq++
		g.intent = append(g.intent, intentEntry{seq: g.seq, after: to, rec: l})
		g.queue = append(g.queue, queued{rec: l, seq: g.seq})
		g.count(&l)
	}
	snap := g.intentSnapshotLocked()
	g.mu.Unlock()
	if changed {
		if err := g.writeIntentLocked(snap); err != nil {
			// The deletion goes ahead regardless: the records are
			// accounted for once they are in the buffer, unless the node
			// stops first.
			g.log.Error("loss ledger: ledger-intent file not written; a stop before the ledger records are in the buffer loses them",
				"from", from, "to", to, "err", err)
		}
	}
	g.fileMu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// confirmedByAll reports whether every sink whose lane cursors are in
// cursors has confirmed the record of lane at off. A sink that does not read
// the lane has no such record to confirm.
func confirmedByAll(cursors []map[uplink.Lane]uint64, lane uplink.Lane, off uint64) bool {
	if len(cursors) == 0 {
		return false
	}
	for _, c := range cursors {
		if cur, ok := c[lane]; ok && off >= cur {
			return false
		}
	}
	return true
}

// removed writes, durably, the ledger records for records the pressure
// levels are about to remove unsynced (reason event.LossDownsampled or
// event.LossDropped): one per stream, with its offset ranges. offs ascend;
// streams[i] is offs[i]'s stream. It counts them only once the ledger records
// are in the buffer: if the write fails, nothing may be removed.
func (g *lossLedger) removed(buf buffer.Engine, reason byte, offs []uint64, streams []string) error {
	e := newRanged(reason)
	for i, off := range offs {
		e.add(streams[i], off)
	}
	recs := e.records()
	payloads := make([][]byte, len(recs))
	for i := range recs {
		payloads[i] = recs[i].AppendBinary(nil)
	}
	if _, err := buf.Append(payloads...); err != nil {
		return err
	}
	g.mu.Lock()
	for i := range recs {
		g.count(&recs[i])
	}
	g.mu.Unlock()
	for _, l := range recs {
		g.log.Warn("records removed unsynced, accounted for in the ledger", "reason", event.LossName(reason),
			"stream", l.Stream, "records", l.Count, "ranges", len(l.Ranges))
	}
	return nil
}

// ranged builds the ranged ledger records of one reason: one per stream, in
// the order the streams first come, with the offsets added (ascending per
// stream) as ranges.
type ranged struct {
	reason   byte
	now      int64
	byStream map[string]*event.LedgerRecord
	order    []string
}

func newRanged(reason byte) *ranged {
	return &ranged{reason: reason, now: time.Now().UnixMilli(), byStream: map[string]*event.LedgerRecord{}}
}

func (e *ranged) add(stream string, off uint64) {
	l := e.byStream[stream]
	if l == nil {
		l = &event.LedgerRecord{Reason: e.reason, Stream: stream, From: e.now, To: e.now}
		e.byStream[stream] = l
		e.order = append(e.order, stream)
	}
	if n := len(l.Ranges); n > 0 && l.Ranges[n-1].First+l.Ranges[n-1].Len == off {
		l.Ranges[n-1].Len++
	} else {
		l.Ranges = append(l.Ranges, event.OffsetRange{First: off, Len: 1})
	}
	l.Count++
}

// records returns the ledger records, each cut to at most maxLedgerRanges
// ranges (splitRanges).
func (e *ranged) records() []event.LedgerRecord {
	var out []event.LedgerRecord
	for _, s := range e.order {
		out = append(out, splitRanges(*e.byStream[s])...)
	}
	return out
}

// maxLedgerRanges bounds the offset ranges of one ledger record: at most
// about 20 bytes each, so a record stays far below buffer.MaxRecordSize
// however scattered the offsets it lists.
const maxLedgerRanges = 100_000

// splitRanges cuts l into records of at most maxLedgerRanges ranges each,
// each counting its own ranges.
func splitRanges(l event.LedgerRecord) []event.LedgerRecord {
	if len(l.Ranges) <= maxLedgerRanges {
		return []event.LedgerRecord{l}
	}
	var out []event.LedgerRecord
	for rs := l.Ranges; len(rs) > 0; {
		n := min(len(rs), maxLedgerRanges)
		part := l
		part.Ranges, part.Count = rs[:n:n], 0
		for _, r := range part.Ranges {
			part.Count += r.Len
		}
		out = append(out, part)
		rs = rs[n:]
	}
	return out
}

type keptKey struct {
	reason byte
	stream string
}

// keptOut accounts for one event the buffer's pressure kept out at ingest
// (reason pressure.Sampled or pressure.Refused). Such events have no offsets:
// the ledger records their count per stream and second.
func (g *lossLedger) keptOut(why, stream string) {
	reason := event.LossRefused
	if why == "sampled" {
		reason = event.LossSampled
	}
	g.counted(reason, stream, 1)
}

// counted accounts for n losses without offsets of one reason and stream,
// in the record of this stream and reason being gathered.
func (g *lossLedger) counted(reason byte, stream string, n uint64) {
	now := time.Now().UnixMilli()
	g.mu.Lock()
	defer g.mu.Unlock()
	k := keptKey{reason, stream}
	l := g.kept[k]
	if l == nil {
		l = &event.LedgerRecord{Reason: reason, Stream: stream, From: now}
		g.kept[k] = l
	}
	l.To = now
	l.Count += n
	g.count(&event.LedgerRecord{Reason: reason, Stream: stream, Count: n})
}

func (g *lossLedger) count(l *event.LedgerRecord) {
	reason := event.LossName(l.Reason)
	if g.totals[reason] == nil {
		g.totals[reason] = map[string]uint64{}
	}
	g.totals[reason][l.Stream] += l.Count
	g.lost.WithLabelValues(reason, l.Stream).Add(float64(l.Count))
}

// recordStream is the stream a record belongs to, "*" when it has none.
func recordStream(p []byte) string {
	if v, ok := event.Peek(p); ok {
		return string(v.Stream)
	}
	switch event.Type(p) {
	case event.TypeWindow:
		if w, err := event.DecodeWindow(p); err == nil {
			return w.Stream
		}
	case event.TypeAlert:
		if a, err := event.DecodeAlert(p); err == nil {
			return a.Stream
		}
	case event.TypeWatermark:
		if w, err := event.DecodeWatermark(p); err == nil {
			return w.Stream
		}
	case event.TypeLedger:
		if l, err := event.DecodeLedger(p); err == nil {
			return l.Stream
		}
	}
	return "*"
}

// run writes queued ledger records to the buffer until stop; a failed write
// is retried every second.
func (g *lossLedger) run(buf buffer.Engine) {
	defer close(g.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			g.flush(buf)
			return
		case <-g.wake:
		case <-t.C:
		}
		g.flush(buf)
	}
}

func (g *lossLedger) flush(buf buffer.Engine) {
	g.mu.Lock()
	for k, l := range g.kept {
		g.queue = append(g.queue, queued{rec: *l})
		delete(g.kept, k)
	}
	q := g.queue
	g.queue = nil
	g.mu.Unlock()
	if len(q) == 0 {
		return
	}
	payloads := make([][]byte, len(q))
	intents := map[uint64]bool{}
	for i := range q {
		payloads[i] = q[i].rec.AppendBinary(nil)
		if q[i].seq != 0 {
			intents[q[i].seq] = true
		}
	}
	if _, err := buf.Append(payloads...); err != nil {
		g.log.Error("loss ledger records not written; retrying", "records", len(q), "err", err)
		g.mu.Lock()
		g.queue = append(q, g.queue...)
		g.mu.Unlock()
		return
	}
	for _, l := range q {
		g.log.Warn("records lost unsynced, accounted for in the ledger", "reason", event.LossName(l.rec.Reason),
			"stream", l.rec.Stream, "records", l.rec.Count, "ranges", len(l.rec.Ranges))
	}
	if len(intents) > 0 {
		// In the buffer now: out of the intent file. Should the node stop
		// first, the next start finds them in the buffer.
		g.fileMu.Lock()
		g.mu.Lock()
		g.intent = slices.DeleteFunc(g.intent, func(e intentEntry) bool { return intents[e.seq] })
		snap := g.intentSnapshotLocked()
		g.mu.Unlock()
		if err := g.writeIntentLocked(snap); err != nil {
			g.log.Warn("loss ledger: ledger-intent file not updated; the next start finds its records in the buffer", "err", err)
		}
		g.fileMu.Unlock()
	}
}

// add queues ledger records to be written with the next flush.
func (g *lossLedger) add(recs ...event.LedgerRecord) {
	g.mu.Lock()
	for _, l := range recs {
		g.queue = append(g.queue, queued{rec: l})
		g.count(&l)
	}
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *lossLedger) close() {
	close(g.stop)
	<-g.done
}

// status returns the lost records by reason and stream.
func (g *lossLedger) status() map[string]map[string]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]map[string]uint64, len(g.totals))
	for r, m := range g.totals {
		out[r] = maps.Clone(m)
	}
	return out
}
