package node

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// lossLedger accounts for every record that leaves the buffer unsynced
// (docs/format/ledger.md): it counts them by reason and stream, in metrics and
// status, and writes ledger records — synced like the rest, critical lane
// first — so that the cloud knows which offsets will never come and why.
//
// Two paths report here: retention deleting records no sink had confirmed (a
// buffer full for too long), with their offset ranges, and the pressure
// levels keeping events out at ingest (sampled, refused), counted per stream.
type lossLedger struct {
	log    *slog.Logger
	lost   *prometheus.CounterVec
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	queue  []event.LedgerRecord            // not yet in the buffer
	kept   map[keptKey]*event.LedgerRecord // events kept out at ingest, not yet queued
	totals map[string]map[string]uint64    // reason → stream → records
}

func newLossLedger(reg prometheus.Registerer, log *slog.Logger) *lossLedger {
	return &lossLedger{
		log: log, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		totals: map[string]map[string]uint64{}, kept: map[keptKey]*event.LedgerRecord{},
		lost: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_lost_records_total",
			Help: "Records that left the buffer unsynced, by reason and stream; each is in a ledger record.",
		}, []string{"reason", "stream"}),
	}
}

// onUnreadDeleted is the log's retention hook: it runs on the log's writer
// goroutine, reads the records about to be deleted, and queues one ledger
// record per stream with their offset ranges.
func (g *lossLedger) onUnreadDeleted(from, to uint64, r buffer.RecordReader) {
	e := newRanged(event.LossEvictedUnsynced)
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			g.log.Error("loss ledger: cannot read records retention deletes; counting them under *", "from", from, "to", to, "err", err)
			break
		}
		e.add(recordStream(p), off)
	}
	recs := e.records()
	g.mu.Lock()
	for _, l := range recs {
		g.queue = append(g.queue, l)
		g.count(&l)
	}
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
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
	l.Count++
	g.count(&event.LedgerRecord{Reason: reason, Stream: stream, Count: 1})
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
		g.queue = append(g.queue, *l)
		delete(g.kept, k)
	}
	q := g.queue
	g.queue = nil
	g.mu.Unlock()
	if len(q) == 0 {
		return
	}
	payloads := make([][]byte, len(q))
	for i := range q {
		payloads[i] = q[i].AppendBinary(nil)
	}
	if _, err := buf.Append(payloads...); err != nil {
		g.log.Error("loss ledger records not written; retrying", "records", len(q), "err", err)
		g.mu.Lock()
		g.queue = append(q, g.queue...)
		g.mu.Unlock()
		return
	}
	for _, l := range q {
		g.log.Warn("records lost unsynced, accounted for in the ledger", "reason", event.LossName(l.Reason),
			"stream", l.Stream, "records", l.Count, "ranges", len(l.Ranges))
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
