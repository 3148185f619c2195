package replica

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// DefaultTimeout is how long a standby's fetch waits for its reply.
const DefaultTimeout = 10 * time.Second

// maxPendingSnapshots bounds the cursors snapshots a standby keeps while it
// catches up; the oldest goes first.
const maxPendingSnapshots = 8

// FollowerOptions configure the standby's side. Zero fields take the
// defaults.
type FollowerOptions struct {
	NodeID string // required; must be the primary's
	Member string // this member's name, for the primary's logs and Replicated
	// Term returns the term of the primary this member follows; it is sent
	// with each fetch, and the primary refuses another. Required.
	Term    func() uint64
	DataDir string // where mirrored files are written
	// Report returns a report to deliver to the primary (the quarantine
	// ledger entries of this member), or nil. It is sent with each fetch
	// until the primary accepts it; then ReportDone is called.
	Report     func() []byte
	ReportDone func()
	// Timeout bounds one fetch, the primary's long poll included; it must
	// exceed the primary's SourceOptions.Wait. Default DefaultTimeout.
	Timeout    time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (o FollowerOptions) withDefaults() FollowerOptions {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports the first option that cannot work.
func (o FollowerOptions) Validate() error {
	switch {
	case o.NodeID == "":
		return errors.New("replica: NodeID is required")
	case o.Term == nil:
		return errors.New("replica: Term is required")
	case o.DataDir == "":
		return errors.New("replica: DataDir is required")
	case o.Timeout < 0:
		return errors.New("replica: Timeout must not be negative")
	}
	return nil
}

// Follower keeps a standby's buffer, cursors and mirrored files a copy of the
// primary's. Run does the work; Lag may be called from any goroutine.
type Follower struct {
	nc      *nats.Conn
	subject string
	buf     buffer.Engine
	o       FollowerOptions
	log     *slog.Logger
	m       *followerMetrics
	hole    []byte

	// Owned by Run.
	prev    *uint32  // CRC-32C of the payload at the log's next offset - 1, if known
	roots   []string // nil until the first reply names them
	digests map[string][digestSize]byte
	cache   map[string]fileStat
	pending []map[string]uint64 // cursors snapshots not yet applicable, oldest first
	applied map[string]uint64   // the snapshot applied last

	mu          sync.Mutex // guards the fields below
	lag         uint64
	primaryNext uint64
	lastContact time.Time
}

// NewFollower returns a follower that fetches from subject on nc into buf.
// Options are checked by Run.
func NewFollower(nc *nats.Conn, subject string, buf buffer.Engine, o FollowerOptions) *Follower {
	o = o.withDefaults()
	return &Follower{
		nc: nc, subject: subject, buf: buf, o: o,
		log: o.Logger.With("component", "replica", "member", o.Member),
		m:   newFollowerMetrics(o.Registerer), hole: []byte{event.TypeHole},
		cache: map[string]fileStat{},
	}
}

// Lag returns how many offsets the primary held durably that this member did
// not (at the last reply), the primary's next offset then, and when the last
// reply came.
func (f *Follower) Lag() (records uint64, primaryNext uint64, lastContact time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lag, f.primaryNext, f.lastContact
}

// Run fetches and applies the primary's records until ctx ends, then returns
// nil. Failed fetches are logged and retried with backoff; Run returns an
// error only when replication cannot go on: the members' node ids differ
// (ErrNodeID), the logs diverged (ErrDiverged), or the buffer failed.
func (f *Follower) Run(ctx context.Context) error {
	if err := f.o.Validate(); err != nil {
		return err
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     100 * time.Millisecond,
		RandomizationFactor: 0.2,
		Multiplier:          2,
		MaxInterval:         2 * time.Second,
	}
	b.Reset()
	for {
		err := f.fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			b.Reset()
			continue
		}
		f.m.fetchErrors.WithLabelValues(reason(err)).Inc()
		if permanent(err) {
			f.log.Error("replication stopped", "err", err)
			return err
		}
		if berr := f.buf.Err(); berr != nil {
			return fmt.Errorf("replica: the standby's buffer failed: %w", berr)
		}
		wait := b.NextBackOff()
		f.log.Warn("replication fetch failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// fetch sends one fetch and applies its reply.
func (f *Follower) fetch(ctx context.Context) error {
	from := f.buf.NextOffset()
	if f.prev == nil && from > 0 {
		if err := f.readPrev(from); err != nil {
			return err
		}
	}
	req := &fetch{term: f.o.Term(), nodeID: f.o.NodeID, member: f.o.Member, from: from, prev: f.prev}
	if f.roots != nil {
		req.digests = f.digests
	}
	if f.o.Report != nil {
		req.report = f.o.Report()
	}
	rctx, cancel := context.WithTimeout(ctx, f.o.Timeout)
	msg, err := f.nc.RequestWithContext(rctx, f.subject, req.encode())
	cancel()
	if err != nil {
		return fmt.Errorf("fetch from %d: %w", from, err)
	}
	rep, err := decodeReply(msg.Data)
	if err != nil {
		return err
	}
	switch {
	case rep.nodeID != f.o.NodeID:
		return errorf(ErrNodeID, "the primary has node id %q, this standby %q", rep.nodeID, f.o.NodeID)
	case rep.term != req.term:
		return errorf(ErrTerm, "the primary answered for term %d, this standby follows term %d", rep.term, req.term)
	case rep.start != from:
		return errorf(ErrMalformed, "the reply starts at %d, the fetch asked for %d", rep.start, from)
	}
	if err := f.appendRecords(rep); err != nil {
		return err
	}
	if err := f.mirror(rep); err != nil {
		return err
	}
	if err := f.applyCursors(rep.cursors); err != nil {
		return err
	}
	if rep.accepted && req.report != nil && f.o.ReportDone != nil {
		f.o.ReportDone()
	}
	next := f.buf.NextOffset()
	f.mu.Lock()
	f.lag, f.primaryNext, f.lastContact = 0, rep.next, time.Now()
	if rep.durable > next {
		f.lag = rep.durable - next
	}
	f.m.lag.Set(float64(f.lag))
	f.mu.Unlock()
	return nil
}

// appendRecords appends a hole at every offset of [start, end) the reply has
// no record for, and the records, in Appends of at most holeChunk records
// (one for a reply without a long run of holes).
func (f *Follower) appendRecords(rep *reply) error {
	base := rep.start // the offset batch[0] gets
	batch := make([][]byte, 0, min(len(rep.offs)+16, holeChunk))
	holes := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		first, err := f.buf.Append(batch...)
		if err != nil {
			return fmt.Errorf("append at %d: %w", base, err)
		}
		if first != base {
			return errorf(ErrDiverged, "the standby's log gave offset %d to the primary's record %d", first, base)
		}
		crc := crc32.Checksum(batch[len(batch)-1], castagnoli)
		f.prev = &crc
		f.m.records.Add(float64(len(batch)))
		f.m.holes.Add(float64(holes))
		base += uint64(len(batch))
		batch, holes = batch[:0], 0
		return nil
	}
	add := func(p []byte) error {
		if len(batch) == holeChunk {
			if err := flush(); err != nil {
				return err
			}
		}
		batch = append(batch, p)
		return nil
	}
	next := rep.start
	for i, off := range rep.offs {
		for ; next < off; next++ {
			holes++
			if err := add(f.hole); err != nil {
				return err
			}
		}
		if err := add(rep.payloads[i]); err != nil {
			return err
		}
		next++
	}
	return flush()
}

// mirror writes the reply's files and deletes its deleted ones, after
// learning the mirrored roots (and digesting this member's copies) if they
// changed.
func (f *Follower) mirror(rep *reply) error {
	if f.roots == nil || !slices.Equal(f.roots, rep.roots) {
		d, err := digests(f.o.DataDir, rep.roots, f.cache)
		if err != nil {
			return fmt.Errorf("digest mirrored files: %w", err)
		}
		f.roots, f.digests = slices.Clone(rep.roots), d
		if f.roots == nil {
			f.roots = []string{}
		}
	}
	for _, file := range rep.files {
		if !underRoots(f.roots, file.name) || !mirrorable(file.name) {
			return errorf(ErrMalformed, "file %q is not under a mirrored root", file.name)
		}
		if err := writeMirrored(f.o.DataDir, file.name, file.data); err != nil {
			return fmt.Errorf("write mirrored file %s: %w", file.name, err)
		}
		f.digests[file.name] = sha256.Sum256(file.data)
	}
	for _, name := range rep.deletes {
		if !underRoots(f.roots, name) {
			return errorf(ErrMalformed, "deleted file %q is not under a mirrored root", name)
		}
		if err := deleteMirrored(f.o.DataDir, name); err != nil {
			return fmt.Errorf("delete mirrored file %s: %w", name, err)
		}
		delete(f.digests, name)
	}
	return nil
}

// applyCursors applies the newest cursors snapshot whose positions this
// member's log holds, whole, and keeps newer ones pending.
func (f *Follower) applyCursors(snap map[string]uint64) error {
	f.pending = append(f.pending, snap)
	if len(f.pending) > maxPendingSnapshots {
		f.pending = f.pending[1:]
	}
	next := f.buf.NextOffset()
	for i := len(f.pending) - 1; i >= 0; i-- {
		if !positionsWithin(f.pending[i], next) {
			continue
		}
		s := f.pending[i]
		f.pending = slices.Delete(f.pending, 0, i+1)
		if maps.Equal(s, f.applied) {
			return nil
		}
		if err := f.buf.CommitCursors(s); err != nil {
			return fmt.Errorf("commit replicated cursors: %w", err)
		}
		f.applied = s
		return nil
	}
	return nil
}

// positionsWithin reports whether every position cursor (not a value) of c
// is at most next.
func positionsWithin(c map[string]uint64, next uint64) bool {
	for name, off := range c {
		if !strings.HasPrefix(name, buffer.ValuePrefix) && off > next {
			return false
		}
	}
	return true
}

// readPrev learns the checksum of this member's record at from-1, if it holds
// one.
func (f *Follower) readPrev(from uint64) error {
	r := f.buf.NewReader(from - 1)
	defer r.Close()
	off, p, err := r.Next()
	if errors.Is(err, io.EOF) || (err == nil && off != from-1) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the standby's log at %d: %w", from-1, err)
	}
	crc := crc32.Checksum(p, castagnoli)
	f.prev = &crc
	return nil
}
