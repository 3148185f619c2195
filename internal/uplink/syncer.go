package uplink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pace"
)

// Record is one log record on its way to a sink.
type Record struct {
	Offset  uint64
	Type    byte   // record type, docs/format/records.md
	Stream  string // the event stream it belongs to
	Lane    Lane
	Payload []byte // exactly as stored
	// Ahead: a record of its lane before it is held back (Holder), so the
	// lane's cursor will not pass it when the sink confirms it. The sink
	// must remember it as stored until its lane comes back to it.
	Ahead bool
}

// Sink delivers records to one destination.
type Sink interface {
	Name() string
	// Resume is called before the first batch and after every failure, with
	// each lane's cursor (every record of the lane below it is confirmed) and
	// the positions the sink last asked to save. It lets the sink find out
	// what of the unconfirmed records already arrived, so that nothing is sent
	// twice.
	Resume(ctx context.Context, lanes map[Lane]uint64, saved map[string]uint64) error
	// Send delivers recs, all of one lane and in offset order, and returns nil
	// only once the sink has confirmed every one. A Permanent error means a
	// record can never be delivered; anything else is retried.
	Send(ctx context.Context, recs []Record) error
	// Positions are sink-specific positions to save, atomically with the
	// lane cursors, after each confirmed batch.
	Positions() map[string]uint64
	Close() error
}

// TypeFilter is implemented by sinks that take only some record types; the
// others are passed over as if synced.
type TypeFilter interface {
	Takes(recordType byte) bool
}

// SyncOptions configure a Syncer. Zero fields take the defaults.
type SyncOptions struct {
	BatchRecords int           // default 1000
	BatchBytes   int           // default 1 MiB
	MaxDelay     time.Duration // wait for a batch to fill at most this long; default 100ms
	SendTimeout  time.Duration // one batch; default 30s
	// Lanes say which lane each record takes; default every stream normal.
	Lanes        *LaneRules
	Retry        RetryOptions
	Breaker      BreakerOptions
	OfflineAfter int
	// ProbeInterval is how often a failing sink that is a Prober is
	// probed; default DefaultProbeInterval.
	ProbeInterval time.Duration
	Logger        *slog.Logger
	Metrics       *Metrics
	// Pacer, if set, paces the sending of every lane but the critical one
	// while on (the latency trigger's action, internal/pace).
	Pacer *pace.Pacer
}

func (o SyncOptions) withDefaults() SyncOptions {
	if o.BatchRecords == 0 {
		o.BatchRecords = 1000
	}
	if o.BatchBytes == 0 {
		o.BatchBytes = 1 << 20
	}
	if o.MaxDelay == 0 {
		o.MaxDelay = 100 * time.Millisecond
	}
	if o.SendTimeout == 0 {
		o.SendTimeout = 30 * time.Second
	}
	if o.Lanes == nil {
		o.Lanes, _ = FixedLanes(nil)
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return o
}

// Syncer forwards every record of the log to one sink (docs/format/lanes.md):
// one reader per priority lane, each sending its lane's records in offset
// order and moving its cursor only past what the sink confirmed, the most
// urgent lane with records waiting always first, one batch in flight at a
// time. Failures are retried with backoff behind a circuit breaker, and drive
// the connectivity state. Ingest and processing go on whatever the sink does;
// the log holds what is not yet synced.
type Syncer struct {
	opts   SyncOptions
	log    buffer.Engine
	sink   Sink
	prefix string // "sync:<sink>:"
	lanes  []*laneState
	conn   *Connectivity
	brk    *Breaker
	cancel context.CancelFunc
	done   chan struct{}

	filter  TypeFilter // nil: the sink takes every synced type
	holder  Holder     // nil: the sink takes every record it is given
	records prometheus.Counter

	unsaved bool        // the buffer failed: cursors in memory only (sync goroutine)
	urgent  atomic.Bool // the buffer is under pressure: sync more often
	paused  atomic.Bool // the degradation level disables sync (pause.go)
	// standing: paused, and the sync goroutine waits in waitWhilePaused
	standing atomic.Bool
	aggOnly  atomic.Bool   // the degradation level limits sync to aggregates (hold.go)
	waker    waker         // cuts an idle wait short (hold.go)
	kick     chan struct{} // cuts a retry wait short when pressure starts
	// reach cuts a retry wait short when the sink's client has reconnected
	// (Reconnecter).
	reach chan struct{}

	// Used by the sync goroutine only.
	linkDown    bool      // a probe failed since the last success
	outageStart time.Time // the first failure of the current run of them; zero while syncs succeed
	idleSaved   time.Time // when commitIdleLanes last saved while records are held

	lag   lagCache  // the lane lags Status counted (lag.go)
	stats loopStats // what the sync goroutine did, for tests
}

// loopStats count the sync goroutine's work: tests check that holding
// records back costs no rescans.
type loopStats struct {
	passes      atomic.Uint64 // calls of nextBatch
	heldReads   atomic.Uint64 // records read and held back
	idleCommits atomic.Uint64 // saves by commitIdleLanes
	lagReads    atomic.Uint64 // records Status read to count lane lags (lag.go)
}

// Pressured is implemented by sinks that change how they send while the
// buffer is under pressure (the JetStream sink compresses harder).
type Pressured interface {
	SetPressure(on bool)
}

// SetPressure tells the syncer whether the buffer is under pressure (the
// warning level and above): it then syncs more often — a failed sink is
// retried at a quarter of the usual longest wait, and a wait already under
// way is cut short — and batches wait half as long to fill. A sink that
// implements Pressured is told too.
func (s *Syncer) SetPressure(on bool) {
	if s.urgent.Swap(on) != on && on {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if p, ok := s.sink.(Pressured); ok {
		p.SetPressure(on)
	}
}

func (s *Syncer) maxDelay() time.Duration {
	if s.urgent.Load() {
		return s.opts.MaxDelay / 2
	}
	return s.opts.MaxDelay
}

// LaneCursors returns each lane's cursor as the syncer holds it: every record
// of the lane below it is confirmed by the sink. A lane the syncer does not
// read is absent.
func (s *Syncer) LaneCursors() map[Lane]uint64 { return s.laneCursors() }

// ReadMarks returns, per lane, the offset at and above which the syncer has
// read nothing in this process: a record of the lane at or above it has not
// been sent by this process, and is not in a batch. A removal that hides a
// record and then finds it at or above every sink's mark knows that no sink
// has it from this process (readers wait at hidden records).
func (s *Syncer) ReadMarks() map[Lane]uint64 {
	out := make(map[Lane]uint64, len(s.lanes))
	for _, ls := range s.lanes {
		out[ls.lane] = ls.mark.Load()
	}
	return out
}

// InFlightLimit bounds how many of a lane's records from its cursor on the
// sink may hold unconfirmed: one batch, at most this many records.
func (s *Syncer) InFlightLimit() int { return s.opts.BatchRecords * maxBacklogFactor }

// laneState is one lane's reader and cursor.
type laneState struct {
	lane   Lane
	cursor string
	next   atomic.Uint64       // every record of the lane below it is confirmed
	r      buffer.RecordReader // owned by the sync goroutine; nil after a failure
	// held: the reader has passed a record the sink holds back (Holder),
	// the first at heldAt; the cursor stays there. Sync goroutine only.
	held   bool
	heldAt uint64
	// mark: the lane's readers in this process have read nothing at or
	// above it; it never goes down (buffer.Marker). ^0 when the engine's
	// readers do not publish it.
	mark atomic.Uint64
}

// position is where the lane's reader stands: every record of the lane below
// it has been sent and confirmed, or the reader would have stopped there.
func (ls *laneState) position() uint64 {
	if ls.r == nil {
		return ls.next.Load()
	}
	if ls.held {
		return min(ls.heldAt, ls.r.Position())
	}
	return ls.r.Position()
}

// reset drops the lane's reader: the next batch reads from the cursor.
func (ls *laneState) reset() {
	if ls.r != nil {
		ls.r.Close()
		ls.r = nil
	}
	ls.held = false
}

// NewSyncer prepares a syncer of l to sink; Start runs it.
func NewSyncer(l buffer.Engine, sink Sink, o SyncOptions) *Syncer {
	o = o.withDefaults()
	s := &Syncer{
		opts:   o,
		log:    l,
		sink:   sink,
		prefix: "sync:" + sink.Name() + ":",
		conn:   NewConnectivity(ConnectivityOptions{OfflineAfter: o.OfflineAfter}),
		brk:    NewBreaker(sink.Name(), o.Breaker),
		done:   make(chan struct{}),
		kick:   make(chan struct{}, 1),
		reach:  make(chan struct{}, 1),
	}
	s.filter, _ = sink.(TypeFilter)
	s.holder, _ = sink.(Holder)
	if ln, ok := sink.(Linked); ok {
		o.Metrics.trackLink(sink.Name(), ln)
	}
	if rc, ok := sink.(Reconnecter); ok {
		rc.OnReconnect(func() {
			select {
			case s.reach <- struct{}{}:
			default:
			}
		})
	}
	o.Metrics.Track(sink.Name(), s.conn, s.brk)
	s.records = o.Metrics.synced.WithLabelValues(sink.Name())
	o.Metrics.trackLag(sink.Name(), s.Status)
	// A lane new to this log (a config that just made a stream low, say)
	// has no record below the other lanes' cursors: start it there.
	start, known := uint64(math.MaxUint64), false
	for lane := range numLanes {
		if off, ok := l.Cursor(s.prefix + lane.String()); ok {
			start, known = min(start, off), true
		}
	}
	for lane := range numLanes {
		if !o.Lanes.Possible(lane) {
			continue
		}
		ls := &laneState{lane: lane, cursor: s.prefix + lane.String()}
		if off, ok := l.Cursor(ls.cursor); ok {
			ls.next.Store(off)
		} else if known {
			ls.next.Store(start)
		}
		ls.mark.Store(ls.next.Load())
		s.lanes = append(s.lanes, ls)
	}
	// A sink's cursors exist from its first start, before anything is
	// confirmed: retention must know that the records are not synced yet.
	initial := map[string]uint64{}
	for _, ls := range s.lanes {
		if _, ok := l.Cursor(ls.cursor); !ok {
			initial[ls.cursor] = ls.next.Load()
		}
	}
	if len(initial) > 0 {
		if err := l.CommitCursors(initial); err != nil {
			o.Logger.Error("sync cursors not saved", "sink", sink.Name(), "err", err)
		}
	}
	return s
}

// Start runs the sync loop until Close.
func (s *Syncer) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		s.run(ctx)
	}()
}

// Close stops syncing and closes the sink. What was not confirmed is sent
// after the next start.
func (s *Syncer) Close() error {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	return s.sink.Close()
}

// laneCursors returns each lane's cursor.
func (s *Syncer) laneCursors() map[Lane]uint64 {
	out := make(map[Lane]uint64, len(s.lanes))
	for _, ls := range s.lanes {
		out[ls.lane] = ls.next.Load()
	}
	return out
}

// synced returns the offset below which every lane is confirmed.
func (s *Syncer) synced() uint64 {
	next := uint64(math.MaxUint64)
	for _, ls := range s.lanes {
		next = min(next, ls.next.Load())
	}
	return next
}

func (s *Syncer) run(ctx context.Context) {
	bo := NewBackoff(s.opts.Retry)
	resumed := false
	var lastProbe time.Time
	defer func() {
		for _, ls := range s.lanes {
			if ls.r != nil {
				ls.r.Close()
			}
		}
	}()
	pacing := s.opts.Pacer.Worker()
	for ctx.Err() == nil {
		if s.waitWhilePaused(ctx) {
			continue
		}
		if !resumed {
			err := s.brk.Do(func() error { return s.sink.Resume(ctx, s.laneCursors(), s.savedPositions()) })
			if p, ok := s.sink.(Prober); ok && err == nil && s.linkDown {
				// A sink whose Resume asks nothing of the network (HTTP)
				// is not back until its probe says so.
				if perr := p.Probe(ctx); perr != nil {
					err = fmt.Errorf("probe: %w", perr)
				}
			}
			if err != nil {
				s.failed(ctx, err, bo)
				continue
			}
			s.conn.Restored()
			resumed = true
		}
		s.releaseHeld()
		s.stats.passes.Add(1)
		ls, batch, err := s.nextBatch(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.Error("sync stopped: cannot read the log", "sink", s.sink.Name(), "err", err)
			}
			return
		}
		if len(batch) == 0 {
			pacing.Idle()
			if err := s.commitIdleLanes(); err != nil {
				s.resetReaders()
				s.failed(ctx, err, bo)
				continue
			}
			if err := s.probeIdle(ctx, &lastProbe); err != nil {
				resumed = false
				s.failed(ctx, err, bo)
			}
			continue
		}
		sendCtx, cancel := context.WithTimeout(ctx, s.opts.SendTimeout)
		err = s.brk.Do(func() error { return s.sink.Send(sendCtx, batch) })
		cancel()
		if err != nil {
			// Read the batch again after the resume: the sink may hold part of it.
			ls.reset()
			resumed = false
			s.failed(ctx, err, bo)
			continue
		}
		if err := s.commit(); err != nil {
			// The sink has the batch but the log does not say so: resume
			// as after a failed send, so that the sink finds what it holds.
			s.resetReaders()
			resumed = false
			s.failed(ctx, err, bo)
			continue
		}
		s.records.Add(float64(len(batch)))
		s.conn.SyncSucceeded()
		s.recovered()
		bo.Reset()
		if ls.lane != LaneCritical {
			pacing.Pace(ctx)
		}
	}
}

// commit saves every lane's position and the sink's positions in one atomic
// write. Only once it is saved do the lanes' cursors move in memory too: the
// cursors the syncer holds are never ahead of the log's, so what a restart
// resumes from is what this run counted as confirmed (the buffer's pressure
// levels rely on it). A failed write is returned; the caller resumes. Once
// the buffer has failed for good, nothing is removed any more and the
// cursors move in memory only, so that the backlog still drains.
func (s *Syncer) commit() error {
	save := make(map[string]uint64, len(s.lanes)+3)
	for _, l := range s.lanes {
		save[l.cursor] = l.position()
	}
	for k, v := range s.sink.Positions() {
		save[buffer.ValuePrefix+s.prefix+k] = v
	}
	if err := s.log.CommitCursors(save); err != nil {
		if !errors.Is(err, buffer.ErrFailed) {
			s.opts.Logger.Error("sync cursors not saved; resuming", "sink", s.sink.Name(), "err", err)
			return fmt.Errorf("save sync cursors: %w", err)
		}
		// The buffer has failed: it takes nothing more, removes nothing,
		// and the node must restart. Until then the backlog keeps draining,
		// the cursors held in memory only; the restart resumes from the
		// saved ones and the sink finds what it holds.
		if !s.unsaved {
			s.unsaved = true
			s.opts.Logger.Error("the buffer has failed: sync cursors are no longer saved; syncing on until the node restarts",
				"sink", s.sink.Name(), "err", err)
		}
	}
	for _, l := range s.lanes {
		l.next.Store(save[l.cursor])
	}
	return nil
}

// resetReaders puts every lane's reader back at its cursor.
func (s *Syncer) resetReaders() {
	for _, ls := range s.lanes {
		ls.reset()
	}
}

// releaseHeld reads the lanes again from their cursors once nothing is held
// back any more (aggregates-only off, the sink not Holding): the held
// records follow, and those sent ahead of them are found by the sink, not
// sent again.
func (s *Syncer) releaseHeld() {
	if s.holding() {
		return
	}
	for _, ls := range s.lanes {
		if ls.held {
			s.opts.Logger.Info("held records follow now", "sink", s.sink.Name(), "lane", ls.lane)
			ls.reset()
		}
	}
}

// commitIdleLanes saves the lanes' positions when nothing waits but readers
// have passed records of other lanes since the last commit, so that a lane
// with nothing to send neither shows a lag nor holds back retention. While
// a lane holds records back, every new record wakes the syncer only to be
// passed over, and the lane's cursor holds retention back anyway: then the
// positions are saved at most every holdPoll, not once per record.
func (s *Syncer) commitIdleLanes() error {
	for _, l := range s.lanes {
		if l.position() != l.next.Load() {
			if s.anyHeld() {
				if time.Since(s.idleSaved) < holdPoll {
					return nil
				}
				s.idleSaved = time.Now()
			}
			s.stats.idleCommits.Add(1)
			return s.commit()
		}
	}
	return nil
}

// nextBatch returns a batch of the most urgent lane that has records waiting,
// or, when no lane has any, nothing once new records are durable or the idle
// wait has passed (MaxDelay; about a second while records are held back).
func (s *Syncer) nextBatch(ctx context.Context) (*laneState, []Record, error) {
	for _, ls := range s.lanes {
		batch, err := s.fill(ctx, ls)
		if err != nil || len(batch) > 0 {
			return ls, batch, err
		}
	}
	// Every reader stands at the durable end: wait for more. (Not from a
	// held record: the reader has passed it.)
	at := uint64(math.MaxUint64)
	for _, ls := range s.lanes {
		if ls.r != nil {
			at = min(at, ls.r.Position())
		} else {
			at = min(at, ls.next.Load())
		}
	}
	wctx, done := s.waitContext(ctx, s.idleWait())
	err := s.log.WaitDurable(wctx, at+1)
	done()
	if ctx.Err() != nil {
		return nil, nil, ctx.Err()
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return nil, nil, err
	}
	return nil, nil, nil
}

// maxBacklogFactor is how much larger than configured a batch grows when a
// backlog builds up (after an outage, say).
const maxBacklogFactor = 8

// batchLimits sizes the next batch: the configured limits while the sink keeps
// up, up to maxBacklogFactor times larger as the backlog grows, so that a
// backlog drains in fewer, bigger round trips. (With a backlog there is no
// waiting for a batch to fill either: the sink is called back to back.)
func (s *Syncer) batchLimits(next uint64) (records, bytes int) {
	factor := 1
	if backlog := s.log.DurableOffset() - min(next, s.log.DurableOffset()); backlog > uint64(s.opts.BatchRecords) {
		factor = int(min(backlog/uint64(s.opts.BatchRecords), maxBacklogFactor))
	}
	return s.opts.BatchRecords * factor, s.opts.BatchBytes * factor
}

// savedPositions returns the sink positions saved with the cursors.
func (s *Syncer) savedPositions() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range s.log.Cursors() {
		if rest, ok := strings.CutPrefix(k, buffer.ValuePrefix+s.prefix); ok {
			out[rest] = v
		}
	}
	return out
}

// fill reads the lane's next batch: its records from the lane's reader on, up
// to the batch limits. Once it has one record, a lane other than critical
// waits up to MaxDelay for the batch to fill, unless a record of a more urgent
// lane turns up. A lane with nothing waiting returns at once.
func (s *Syncer) fill(ctx context.Context, ls *laneState) ([]Record, error) {
	if ls.r == nil {
		ls.r = s.log.NewReader(ls.next.Load())
		if m, ok := ls.r.(buffer.Marker); ok {
			m.SetMark(&ls.mark)
		} else {
			ls.mark.Store(math.MaxUint64) // unknown: nothing may be removed
		}
	}
	r := ls.r
	var (
		batch    []Record
		ends     []int  // end of each record's payload in arena
		arena    []byte // the batch's payloads, copied out of the reader's buffer
		deadline time.Time
		wait     = ls.lane != LaneCritical
	)
	maxRecords, maxBytes := s.batchLimits(ls.next.Load())
	for len(batch) < maxRecords && len(arena) < maxBytes {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			if !wait || len(batch) == 0 {
				break
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(s.maxDelay())
			}
			wctx, cancel := context.WithDeadline(ctx, deadline)
			werr := s.log.WaitDurable(wctx, r.Position()+1)
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(werr, context.DeadlineExceeded) {
				break
			}
			if werr != nil {
				return nil, werr
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		lane, stream, ok := s.opts.Lanes.classify(off, p, ls.lane)
		if !ok || (s.filter != nil && !s.filter.Takes(event.Type(p))) {
			continue
		}
		if lane != ls.lane {
			if lane < ls.lane {
				wait = false // a more urgent record is waiting
			}
			continue
		}
		rec := Record{Offset: off, Type: event.Type(p), Stream: stream, Lane: lane}
		if s.holds(rec) {
			s.stats.heldReads.Add(1)
			if !ls.held {
				ls.held, ls.heldAt = true, off
			}
			continue
		}
		rec.Ahead = ls.held
		arena = append(arena, p...)
		ends = append(ends, len(arena))
		batch = append(batch, rec)
	}
	start := 0
	for i := range batch {
		batch[i].Payload = arena[start:ends[i]:ends[i]]
		start = ends[i]
	}
	return batch, nil
}

// failed records a failure and waits before the next attempt.
func (s *Syncer) failed(ctx context.Context, err error, bo *Backoff) {
	s.conn.SyncFailed(err)
	maxWait := s.opts.Retry.MaxInterval
	if maxWait <= 0 {
		maxWait = DefaultRetryOptions.MaxInterval
	}
	if s.urgent.Load() {
		maxWait /= 4
	}
	wait := min(bo.Next(), maxWait)
	if d, ok := RetryAfter(err); ok {
		wait = max(wait, min(d, maxWait)) // a server cannot stall the sync past the cap
	}
	if IsPermanent(err) {
		// The sink refuses these records for good. They are not dropped
		// (nothing leaves the buffer unsynced except by a counted overflow
		// action): the sink is retried at the slowest pace, with the error in
		// the status, until its operator fixes the receiving end.
		wait = maxWait
		s.opts.Logger.Error("sink refuses records; holding them and retrying slowly", "sink", s.sink.Name(),
			"err", err, "wait", wait)
	} else if s.outageStart.IsZero() {
		// Logged once per outage; the retries are at debug level, and the
		// recovery is logged once too (recovered).
		s.opts.Logger.Warn("sink connection lost; retrying until it is back", "sink", s.sink.Name(), "err", err)
	} else {
		s.opts.Logger.Debug("sync failed; retrying", "sink", s.sink.Name(), "err", err, "wait", wait,
			"state", s.conn.Snapshot().State, "breaker", s.brk.State())
	}
	if s.outageStart.IsZero() {
		s.outageStart = time.Now()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	var probe <-chan time.Time
	prober, _ := s.sink.(Prober)
	if prober != nil && !IsPermanent(err) {
		tk := time.NewTicker(s.opts.ProbeInterval)
		defer tk.Stop()
		probe = tk.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-s.kick:
			return
		case <-s.reach:
			s.reachable()
			return
		case <-probe:
			if perr := prober.Probe(ctx); perr != nil {
				s.linkDown = true
				continue
			}
			if s.linkDown {
				s.reachable()
				return
			}
		}
	}
}

// probeIdle probes a Prober sink every ProbeInterval while nothing waits to
// be sent, so that an outage shows in the state even on a quiet node: a
// failed probe is returned as a failure. A probe that succeeds while the
// state is not connected counts as a sync (there is nothing to sync and the
// link works).
func (s *Syncer) probeIdle(ctx context.Context, last *time.Time) error {
	prober, ok := s.sink.(Prober)
	if !ok || time.Since(*last) < s.opts.ProbeInterval {
		return nil
	}
	*last = time.Now()
	if err := prober.Probe(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.linkDown = true
		return fmt.Errorf("probe: %w", err)
	}
	if s.conn.Snapshot().State != Connected {
		s.conn.SyncSucceeded()
		s.recovered()
	}
	return nil
}

// reachable is called when the sink can be reached again after it could
// not: the retry wait ends, an open breaker lets the next call through at
// once as its probe, and an offline link becomes degraded.
func (s *Syncer) reachable() {
	s.linkDown = false
	s.brk.HalfOpen()
	s.conn.Restored()
	s.opts.Logger.Debug("sink reachable again; retrying now", "sink", s.sink.Name())
}

// recovered logs, once, that a batch synced after a run of failures.
func (s *Syncer) recovered() {
	if s.outageStart.IsZero() {
		return
	}
	s.opts.Logger.Info("sink connection restored; sync resumed", "sink", s.sink.Name(),
		"outage", time.Since(s.outageStart).Round(time.Millisecond))
	s.outageStart = time.Time{}
	s.linkDown = false
}

// Connectivity returns the sink's connectivity state; cheap, it never
// touches the log or the sink.
func (s *Syncer) Connectivity() ConnectivitySnapshot { return s.conn.Snapshot() }

// Name returns the sink's name.
func (s *Syncer) Name() string { return s.sink.Name() }

// SinkStatus is one sink's part of /v1/status.
type SinkStatus struct {
	Sink         string    `json:"sink"`
	State        State     `json:"state"`
	Since        time.Time `json:"since"`
	OfflineSince time.Time `json:"offline_since,omitzero"`
	Breaker      string    `json:"breaker"`
	// SyncedOffset: every record below it is confirmed, in every lane.
	SyncedOffset uint64 `json:"synced_offset"`
	LagRecords   uint64 `json:"lag_records"`
	// LagBytes estimates the log bytes from SyncedOffset to the durable end.
	LagBytes int64 `json:"lag_bytes"`
	// OldestUnsynced is when the oldest event not yet confirmed was received
	// (zero when nothing waits); OldestUnsyncedSeconds is its age.
	OldestUnsynced        time.Time    `json:"oldest_unsynced,omitzero"`
	OldestUnsyncedSeconds float64      `json:"oldest_unsynced_seconds"`
	Lanes                 []LaneStatus `json:"lanes"`
	ConsecutiveFailures   int          `json:"consecutive_failures"`
	LastError             string       `json:"last_error,omitempty"`
	LastSuccess           time.Time    `json:"last_success,omitzero"`
	// Link is the link in use (or last used) of a sink with several.
	Link *LinkStatus `json:"link,omitempty"`
	// AggregatesOnly: the sync is limited to aggregates (SetAggregatesOnly);
	// the lanes' lags count the records held back.
	AggregatesOnly bool `json:"aggregates_only,omitempty"`
	// Paused: the degradation level has paused the sync (SetPaused) and
	// the syncer stands, with no batch in flight: its positions do not
	// move until it resumes.
	Paused bool `json:"paused,omitempty"`
}

// LaneStatus is one lane's position.
type LaneStatus struct {
	Lane         string `json:"lane"`
	SyncedOffset uint64 `json:"synced_offset"`
	// LagRecords counts the lane's own records after its cursor; when more
	// than laneScan records of the log would have to be read to count them,
	// it counts those read and LagAtLeast is set.
	LagRecords uint64 `json:"lag_records"`
	LagAtLeast bool   `json:"lag_at_least,omitempty"`
}

// Offline reports whether the sink is in the offline state. It is cheap and
// never blocks on the sink.
func (s *Syncer) Offline() bool { return s.conn.Snapshot().State == Offline }

// Status reports the sink's state and backlog.
func (s *Syncer) Status() SinkStatus {
	c := s.conn.Snapshot()
	next := s.synced()
	durable := s.log.DurableOffset()
	st := SinkStatus{
		Sink: s.sink.Name(), State: c.State, Since: c.Since, OfflineSince: c.OfflineSince,
		Breaker: s.brk.State(), SyncedOffset: next, ConsecutiveFailures: c.ConsecutiveFailures,
		LastError: c.LastError, LastSuccess: c.LastSuccess, Lanes: []LaneStatus{},
		AggregatesOnly: s.aggOnly.Load(), Paused: s.standing.Load(),
	}
	if ln, ok := s.sink.(Linked); ok {
		if i := ln.LinkInUse(); i >= 0 {
			st.Link = &ln.Links()[i]
		}
	}
	for _, ls := range s.lanes {
		n := ls.next.Load()
		lag, atLeast := s.laneLag(ls.lane, n, durable)
		st.Lanes = append(st.Lanes, LaneStatus{Lane: ls.lane.String(), SyncedOffset: n, LagRecords: lag, LagAtLeast: atLeast})
	}
	if durable > next {
		st.LagRecords = durable - next
		st.LagBytes = s.log.BytesFrom(next)
		if t, ok := s.oldestUnsynced(next); ok {
			st.OldestUnsynced = t
			st.OldestUnsyncedSeconds = max(0, time.Since(t).Seconds())
		}
	}
	return st
}

// oldestScan bounds how many records oldestUnsynced reads looking for an
// event; windows, alerts and watermarks are derived from events, so the
// nearest event dates them closely enough.
const oldestScan = 1024

// oldestUnsynced returns when the first event at or after next was received.
func (s *Syncer) oldestUnsynced(next uint64) (time.Time, bool) {
	r := s.log.NewReader(next)
	defer r.Close()
	for range oldestScan {
		_, p, err := r.Next()
		if err != nil {
			return time.Time{}, false
		}
		if v, ok := event.Peek(p); ok && v.Received > 0 {
			return time.UnixMilli(v.Received), true
		}
	}
	return time.Time{}, false
}
