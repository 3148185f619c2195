// Package store is the event layer over the buffer: it encodes validated events
// into log records, drops device retries (same device and id, or for an id-less
// event with the device's own ts the same content, within a window),
// keeps an in-memory index of where each device's and stream's events lie in the
// log, and answers local event queries from the log with it.
//
// It implements ingest.Appender: Append returns only once the events are durable.
// The index and the de-duplication set are rebuilt from the log on open: from
// the store's index file (snapshot.go, docs/format/store-index.md) and the log
// after it when there is one, from the whole log otherwise.
//
// The de-duplication keys are SipHash-2-4 sums (github.com/dchest/siphash)
// under keys kept in the index file.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
)

// Options configure a Store. Zero fields take the defaults.
type Options struct {
	// DedupWindow is how long an event id is remembered per device; default 10m.
	DedupWindow time.Duration
	// DedupMaxEntries bounds the keys remembered (ids and contents); the
	// oldest are forgotten first (counted in holdfast_dedup_evicted_total).
	// Default 1 000 000.
	DedupMaxEntries int
	// NoContentDedup turns off de-duplicating id-less events by content
	// (ingest.dedup_without_id: off). By default an event without an id
	// whose device gave the ts is dropped as a retry when an event with the
	// same device, stream, ts, value and tags was stored within DedupWindow;
	// its key counts against DedupMaxEntries like an id.
	NoContentDedup bool
	// SnapshotPath is the store's index file (docs/format/store-index.md):
	// written at Close and every snapshotEvery records, read by Open so that
	// it reads only the log after it. Empty: none, Open reads the whole log.
	SnapshotPath string
	Logger       *slog.Logger
	Metrics      *Metrics         // nil: none
	now          func() time.Time // test clock

	// OutputsOnly opens a store that only appends the processor's outputs,
	// for the replay of `holdfast recover`: Open does not read the log, and
	// the store keeps no query index, de-duplication set or late marks, whose
	// memory grows with the log. Append refuses events.
	OutputsOnly bool
}

func (o Options) withDefaults() Options {
	if o.DedupWindow == 0 {
		o.DedupWindow = 10 * time.Minute
	}
	if o.DedupMaxEntries == 0 {
		o.DedupMaxEntries = 1_000_000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// Store is safe for concurrent use.
type Store struct {
	opts  Options
	log   buffer.Engine
	dedup *dedup
	idx   *index
	bufs  sync.Pool
	// first is the log's first offset when the index last forgot runs below it.
	first atomic.Uint64

	lateMu sync.RWMutex
	late   map[uint64]struct{} // guarded by lateMu; offsets of events marked late

	skipped skipCounts // records queries could not decode

	// stamp hands out received times: never below one stamped before, nor
	// below the newest in the log, whatever the wall clock does.
	stamp *clock.Stamper
	// holdUntil: a received time found in the log above it (further ahead
	// of the wall clock at Open than maxReceivedHold) does not hold the new
	// ones back.
	holdUntil int64
	// lastReceived is the highest received time of an event in the log.
	lastReceived atomic.Int64

	// appendMu: appends hold it shared from their log write until their
	// events are indexed; WriteSnapshot takes it to find the offset below
	// which everything is indexed.
	appendMu sync.RWMutex
	snapMu   sync.Mutex    // one index file written at a time
	snapNext atomic.Uint64 // S of the last index file written or loaded
	snapping atomic.Bool   // a background WriteSnapshot is running
	snapWG   sync.WaitGroup

	fedOnce sync.Once
	fed     atomic.Pointer[Fed] // nil until Fed is called (fed.go)
}

var _ ingest.Appender = (*Store)(nil)

// maxReceivedHold bounds how far ahead of the wall clock at Open a received
// time found in the log may be and still hold the new ones back.
const maxReceivedHold = time.Hour

// Open builds a store over an open log, rebuilding the index and the
// de-duplication set from the index file (Options.SnapshotPath) and the log
// after it, or from the whole log.
func Open(l buffer.Engine, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	s := &Store{
		opts:      opts,
		log:       l,
		dedup:     newDedup(opts.DedupWindow, opts.DedupMaxEntries),
		idx:       newIndex(),
		late:      map[uint64]struct{}{},
		stamp:     clock.NewStamper(opts.now),
		holdUntil: opts.now().Add(maxReceivedHold).UnixMilli(),
	}
	if opts.OutputsOnly {
		return s, nil
	}
	start := time.Now()
	since := opts.now().Add(-opts.DedupWindow).UnixMilli()
	var from uint64
	loaded := false
	if opts.SnapshotPath != "" {
		var why error
		from, loaded, why = s.loadSnapshot(since)
		if why != nil && !isNotExist(why) {
			opts.Logger.Warn("store index file not used; reading the whole log", "file", opts.SnapshotPath, "why", why)
		}
	}
	n, err := s.rebuild(from, since)
	if err != nil {
		return nil, err
	}
	opts.Logger.Info("store index rebuilt", "index_file", loaded, "from_offset", from, "records", n,
		"devices", s.idx.devices(), "dedup_keys", s.dedup.len(), "took", time.Since(start).Round(time.Millisecond))
	if opts.Metrics != nil {
		opts.Metrics.dedup.Store(s.dedup)
	}
	return s, nil
}

// Close waits for an index file being written and writes the last one. The
// store must not be appended to after it.
func (s *Store) Close() error {
	s.snapWG.Wait()
	return s.WriteSnapshot()
}

// rebuild reads the log from offset from (0, or the index file's S),
// indexes its records and restores the de-duplication keys of the events
// received since since.
func (s *Store) rebuild(from uint64, since int64) (int, error) {
	r := s.log.NewReader(from)
	defer r.Close()
	// The set ends up with at most DedupMaxEntries keys, one per record
	// read at most: room for them up front spares growing it.
	if end := s.log.DurableOffset(); end > from && from == 0 {
		s.dedup.reserve(int(min(end-from, uint64(s.opts.DedupMaxEntries))))
	}
	n := 0
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("rebuild index: %w", err)
		}
		if event.Type(p) != event.TypeEvent {
			s.indexOutput(p, off)
			continue
		}
		v, ok := event.Peek(p)
		if !ok {
			// event.DecodeBinary says why when a query reads it. Index what
			// could be read of it (all but a non-finite value, say), as
			// Append did, so that a query for its device or stream meets it
			// and counts it (skipped.go).
			if v.DeviceID != nil && v.Stream != nil {
				indexAdd(s.idx, v.DeviceID, v.Stream, v.TS, off)
			}
			continue
		}
		indexAdd(s.idx, v.DeviceID, v.Stream, v.TS, off)
		s.restoreReceived(v.Received)
		s.restoreKey(v, p, since)
		n++
	}
}

// restoreKey adds the key of the event record p (peeked as v) to the
// de-duplication set if it was received since since.
func (s *Store) restoreKey(v event.View, p []byte, since int64) {
	if v.Received < since {
		return
	}
	switch {
	case v.ID != nil:
		s.dedup.restore(v.DeviceID, v.ID, v.Received, 0)
	case !s.opts.NoContentDedup:
		// The record does not say whether the device gave its ts: every
		// id-less event's content is remembered, and only events with the
		// device's ts are checked against it.
		if key, ok := s.dedup.contentKey(p); ok {
			s.dedup.restoreKey(key, v.Received)
		}
	}
}

// Append stores events durably; see ingest.Appender.
func (s *Store) Append(ctx context.Context, evs []event.Event) (ingest.Result, error) {
	var res ingest.Result
	if len(evs) == 0 {
		return res, nil
	}
	if s.opts.OutputsOnly {
		return res, errors.New("store: opened for outputs only, it takes no events")
	}
	now := s.stamp.Stamp()
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	buf := (*bp)[:0]
	ends := make([]int, 0, len(evs))
	keep := make([]int, 0, len(evs)) // index into evs of each stored event
	var checks []keyCheck
	for i := range evs {
		e := &evs[i]
		if e.Received == 0 {
			e.Received = now
		}
		start := len(buf)
		buf = e.AppendBinary(buf)
		var key dedupKey
		ok := false
		switch {
		case e.ID != "":
			key, ok = s.dedup.idKey(e.DeviceID, e.ID), true
		case !e.TSAssigned && !s.opts.NoContentDedup:
			// No id, but the device's own ts: the content is the key.
			key, ok = s.dedup.contentKey(buf[start:])
		}
		if ok {
			if checks == nil {
				checks = make([]keyCheck, 0, len(evs)-i)
			}
			checks = append(checks, keyCheck{key: key, received: e.Received, at: i})
		}
		ends = append(ends, len(buf))
		keep = append(keep, i)
	}
	var c *claim
	var waits []*claim
	if len(checks) > 0 {
		c = newClaim()
		if waits, res.Duplicates = s.dedup.checkAll(checks, c); res.Duplicates > 0 {
			buf, ends, keep = dropDuplicates(buf, ends, keep, checks)
		}
	}
	var err error
	if len(keep) > 0 {
		s.appendMu.RLock()
		payloads := make([][]byte, len(ends))
		startPos := 0
		for i, end := range ends {
			payloads[i] = buf[startPos:end]
			startPos = end
		}
		var first uint64
		if f := s.fed.Load(); f != nil {
			first, err = s.appendFed(f, payloads, evs, keep)
		} else {
			first, err = s.log.Append(payloads...)
		}
		if err == nil {
			received := evs[keep[0]].Received
			s.idx.mu.Lock() // once a batch, not once an event
			for i, j := range keep {
				e := &evs[j]
				extend(s.idx.byDevice, e.DeviceID, e.TS, first+uint64(i))
				extend(s.idx.byStream, e.Stream, e.TS, first+uint64(i))
				received = max(received, e.Received)
			}
			s.idx.mu.Unlock()
			s.seenReceived(received)
			res.Stored = len(keep)
			if f := s.log.FirstOffset(); f > s.first.Load() {
				s.first.Store(f)
				s.forget(f) // retention deleted segments
			}
		}
		s.appendMu.RUnlock()
		if err == nil {
			s.maybeSnapshot(first + uint64(len(keep)))
		}
	}
	*bp = buf
	s.bufs.Put(bp)
	if c != nil {
		s.dedup.settle(c, err)
	}
	if err != nil {
		return ingest.Result{}, fmt.Errorf("%w: %v", ingest.ErrUnavailable, err)
	}
	// A retry of an event still being written is acknowledged only once the
	// original is durable.
	for _, w := range waits {
		if werr := w.wait(ctx); werr != nil {
			return ingest.Result{}, fmt.Errorf("%w: %v", ingest.ErrUnavailable, werr)
		}
	}
	return res, nil
}

// dropDuplicates removes the events checks found to be duplicates from the
// encoded batch: buf holds the records, ends[i] the end of record i, keep[i]
// its index in the Append's events.
func dropDuplicates(buf []byte, ends, keep []int, checks []keyCheck) ([]byte, []int, []int) {
	dup := make([]bool, len(keep))
	for _, k := range checks {
		dup[k.at] = k.dup
	}
	w, from := 0, 0
	n := 0
	for i, end := range ends {
		if !dup[i] {
			w += copy(buf[w:], buf[from:end])
			ends[n], keep[n] = w, keep[i]
			n++
		}
		from = end
	}
	return buf[:w], ends[:n], keep[:n]
}

// seenReceived raises lastReceived to ms.
func (s *Store) seenReceived(ms int64) {
	for {
		cur := s.lastReceived.Load()
		if ms <= cur || s.lastReceived.CompareAndSwap(cur, ms) {
			return
		}
	}
}

// restoreReceived notes a received time found in the log at open: it is the
// floor of the new ones, unless it is further ahead of the wall clock than
// maxReceivedHold (a clock once set far ahead must not hold received times
// for as long).
func (s *Store) restoreReceived(ms int64) {
	s.seenReceived(ms)
	if ms <= s.holdUntil {
		s.stamp.Raise(ms)
	}
}

// maybeSnapshot starts writing the index file in the background once
// snapshotEvery records were appended since the last one.
func (s *Store) maybeSnapshot(next uint64) {
	if s.opts.SnapshotPath == "" || next < s.snapNext.Load()+snapshotEvery || !s.snapping.CompareAndSwap(false, true) {
		return
	}
	s.snapWG.Add(1)
	go func() {
		defer s.snapWG.Done()
		defer s.snapping.Store(false)
		if err := s.WriteSnapshot(); err != nil {
			// The next start reads more of the log; nothing is lost.
			s.opts.Logger.Warn("cannot write the store index file", "err", err)
		}
	}()
}

// Log returns the underlying log.
func (s *Store) Log() buffer.Engine { return s.log }
