package uplink

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// Record is one log record on its way to a sink.
type Record struct {
	Offset  uint64
	Type    byte   // record type, docs/format/records.md
	Stream  string // the event stream it belongs to
	Payload []byte // exactly as stored
}

// Sink delivers records to one destination.
type Sink interface {
	Name() string
	// Resume is called before the first batch and after every failure, with
	// the offset below which everything is confirmed and the positions the
	// sink last asked to save. It lets the sink find out what of the
	// unconfirmed tail already arrived, so that nothing is sent twice.
	Resume(ctx context.Context, next uint64, saved map[string]uint64) error
	// Send delivers recs, in offset order, and returns nil only once the sink
	// has confirmed every one. A Permanent error means a record can never be
	// delivered; anything else is retried.
	Send(ctx context.Context, recs []Record) error
	// Positions are sink-specific positions to save, atomically with the
	// cursor, after each confirmed batch.
	Positions() map[string]uint64
	Close() error
}

// SyncOptions configure a Syncer. Zero fields take the defaults.
type SyncOptions struct {
	BatchRecords int           // default 1000
	BatchBytes   int           // default 1 MiB
	MaxDelay     time.Duration // wait for a batch to fill at most this long; default 100ms
	SendTimeout  time.Duration // one batch; default 30s
	Retry        RetryOptions
	Breaker      BreakerOptions
	OfflineAfter int
	Logger       *slog.Logger
	Metrics      *Metrics
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
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return o
}

// Syncer forwards every record of the log to one sink, in offset order: it
// reads from the sink's cursor, sends batches, and moves the cursor only past
// what the sink confirmed. Failures are retried with backoff behind a circuit
// breaker, and drive the connectivity state. Ingest and processing go on
// whatever the sink does; the log holds what is not yet synced.
type Syncer struct {
	opts   SyncOptions
	log    *buffer.Log
	sink   Sink
	cursor string
	conn   *Connectivity
	brk    *Breaker
	cancel context.CancelFunc
	done   chan struct{}

	next    atomic.Uint64 // every record below it is confirmed by the sink
	records prometheus.Counter
}

// NewSyncer prepares a syncer of l to sink; Start runs it.
func NewSyncer(l *buffer.Log, sink Sink, o SyncOptions) *Syncer {
	o = o.withDefaults()
	s := &Syncer{
		opts:   o,
		log:    l,
		sink:   sink,
		cursor: "sync:" + sink.Name(),
		conn:   NewConnectivity(ConnectivityOptions{OfflineAfter: o.OfflineAfter}),
		brk:    NewBreaker(sink.Name(), o.Breaker),
		done:   make(chan struct{}),
	}
	o.Metrics.Track(sink.Name(), s.conn, s.brk)
	s.records = o.Metrics.synced.WithLabelValues(sink.Name())
	if off, ok := l.Cursor(s.cursor); ok {
		s.next.Store(off)
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

func (s *Syncer) run(ctx context.Context) {
	bo := NewBackoff(s.opts.Retry)
	resumed := false
	var r *buffer.Reader
	defer func() {
		if r != nil {
			r.Close()
		}
	}()
	for ctx.Err() == nil {
		next := s.next.Load()
		if !resumed {
			err := s.brk.Do(func() error { return s.sink.Resume(ctx, next, s.savedPositions()) })
			if err != nil {
				s.failed(ctx, err, bo)
				continue
			}
			s.conn.Restored()
			resumed = true
		}
		if r == nil {
			r = s.log.NewReader(next)
		}
		batch, err := s.fill(ctx, r, next)
		if err != nil {
			if ctx.Err() == nil {
				s.opts.Logger.Error("sync stopped: cannot read the log", "sink", s.sink.Name(), "err", err)
			}
			return
		}
		if len(batch) == 0 {
			continue
		}
		sendCtx, cancel := context.WithTimeout(ctx, s.opts.SendTimeout)
		err = s.brk.Do(func() error { return s.sink.Send(sendCtx, batch) })
		cancel()
		if err != nil {
			// Read the batch again after the resume: the sink may hold part of it.
			r.Close()
			r, resumed = nil, false
			s.failed(ctx, err, bo)
			continue
		}
		last := batch[len(batch)-1].Offset
		save := map[string]uint64{s.cursor: last + 1}
		for k, v := range s.sink.Positions() {
			save[s.cursor+":"+k] = v
		}
		if err := s.log.CommitCursors(save); err != nil {
			s.opts.Logger.Error("sync cursor not saved; the batch will be checked again after a restart",
				"sink", s.sink.Name(), "err", err)
		}
		s.next.Store(last + 1)
		s.records.Add(float64(len(batch)))
		s.conn.SyncSucceeded()
		bo.Reset()
	}
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

// savedPositions returns the sink positions saved with the cursor.
func (s *Syncer) savedPositions() map[string]uint64 {
	out := map[string]uint64{}
	prefix := s.cursor + ":"
	for k, v := range s.log.Cursors() {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out[rest] = v
		}
	}
	return out
}

// fill reads the next batch: records from next on, up to the batch limits,
// waiting at most MaxDelay for more once it has one. Records of kinds the
// cloud does not take are passed over.
func (s *Syncer) fill(ctx context.Context, r *buffer.Reader, next uint64) ([]Record, error) {
	var batch []Record
	bytes := 0
	deadline := time.Time{}
	maxRecords, maxBytes := s.batchLimits(next)
	for len(batch) < maxRecords && bytes < maxBytes {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			if len(batch) > 0 && !deadline.IsZero() && time.Now().After(deadline) {
				return batch, nil
			}
			if len(batch) > 0 && deadline.IsZero() {
				deadline = time.Now().Add(s.opts.MaxDelay)
			}
			wait := s.opts.MaxDelay
			if !deadline.IsZero() {
				wait = time.Until(deadline)
			}
			wctx, cancel := context.WithTimeout(ctx, max(wait, time.Millisecond))
			werr := s.log.WaitDurable(wctx, r.Position()+1)
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if werr != nil && !errors.Is(werr, context.DeadlineExceeded) {
				return nil, werr
			}
			if len(batch) == 0 && errors.Is(werr, context.DeadlineExceeded) {
				return nil, nil // idle: let the caller look at ctx again
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if off < next {
			continue
		}
		rec, ok := toRecord(off, p)
		if !ok {
			continue
		}
		batch = append(batch, rec)
		bytes += len(p)
	}
	return batch, nil
}

// toRecord copies a synced kind of record out of the reader's buffer.
func toRecord(off uint64, p []byte) (Record, bool) {
	rec := Record{Offset: off, Type: event.Type(p)}
	switch rec.Type {
	case event.TypeEvent:
		v, ok := event.Peek(p)
		if !ok {
			return rec, false
		}
		rec.Stream = string(v.Stream)
	case event.TypeWindow:
		w, err := event.DecodeWindow(p)
		if err != nil {
			return rec, false
		}
		rec.Stream = w.Stream
	case event.TypeAlert:
		a, err := event.DecodeAlert(p)
		if err != nil {
			return rec, false
		}
		rec.Stream = a.Stream
	case event.TypeWatermark:
		w, err := event.DecodeWatermark(p)
		if err != nil {
			return rec, false
		}
		rec.Stream = w.Stream
	default:
		return rec, false
	}
	rec.Payload = append([]byte(nil), p...)
	return rec, true
}

// failed records a failure and waits before the next attempt.
func (s *Syncer) failed(ctx context.Context, err error, bo *Backoff) {
	s.conn.SyncFailed(err)
	maxWait := s.opts.Retry.MaxInterval
	if maxWait <= 0 {
		maxWait = DefaultRetryOptions.MaxInterval
	}
	wait := bo.Next()
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
	} else {
		s.opts.Logger.Warn("sync failed; retrying", "sink", s.sink.Name(), "err", err, "wait", wait,
			"state", s.conn.Snapshot().State)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// SinkStatus is one sink's part of /v1/status.
type SinkStatus struct {
	Sink                string    `json:"sink"`
	State               State     `json:"state"`
	Since               time.Time `json:"since"`
	OfflineSince        time.Time `json:"offline_since,omitzero"`
	Breaker             string    `json:"breaker"`
	SyncedOffset        uint64    `json:"synced_offset"`
	LagRecords          uint64    `json:"lag_records"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastError           string    `json:"last_error,omitempty"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
}

// Offline reports whether the sink is in the offline state. It is cheap and
// never blocks on the sink.
func (s *Syncer) Offline() bool { return s.conn.Snapshot().State == Offline }

// Status reports the sink's state and backlog.
func (s *Syncer) Status() SinkStatus {
	c := s.conn.Snapshot()
	next := s.next.Load()
	st := SinkStatus{
		Sink: s.sink.Name(), State: c.State, Since: c.Since, OfflineSince: c.OfflineSince,
		Breaker: s.brk.State(), SyncedOffset: next, ConsecutiveFailures: c.ConsecutiveFailures,
		LastError: c.LastError, LastSuccess: c.LastSuccess,
	}
	if d := s.log.DurableOffset(); d > next {
		st.LagRecords = d - next
	}
	return st
}
