package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// Defaults of SourceOptions.
const (
	DefaultMaxBytes = 4 << 20
	DefaultWait     = 500 * time.Millisecond
)

// headerReserve is room kept in a NATS message for a reply's header (term,
// offsets, roots, cursors, file names) besides records and file contents.
const headerReserve = 64 << 10

// holeChunk is the most records one Append of the standby carries.
const holeChunk = 1 << 16

// SourceOptions configure the primary's side. Zero fields take the defaults.
type SourceOptions struct {
	NodeID string // required; a standby with another is refused
	// Term returns the current term while this member is a valid primary;
	// ok=false and the source refuses to serve (ErrNotPrimary). Required.
	Term    func() (term uint64, ok bool)
	DataDir string // mirrored files are relative to it
	// Files are the state files and directories to mirror, relative to
	// DataDir ("lanes", "checkpoints"). A directory mirrors its regular
	// files; those deleted here are deleted on the standby too.
	Files []string
	// OnReport gets a standby's report (opaque bytes); the report is
	// accepted when it returns nil, and sent again with the next fetch
	// otherwise. A report whose reply is lost is delivered again: OnReport
	// must take the same report twice without harm. Nil accepts none.
	OnReport func(member string, report []byte) error
	// MaxBytes bounds the record and file bytes of one reply; a record
	// larger than that travels alone. Default DefaultMaxBytes.
	MaxBytes int
	// Wait is how long a fetch waits for a record to become durable at its
	// offset before the reply goes out empty. Default DefaultWait.
	Wait       time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

func (o SourceOptions) withDefaults() SourceOptions {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Wait == 0 {
		o.Wait = DefaultWait
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports the first option that cannot work.
func (o SourceOptions) Validate() error {
	switch {
	case o.NodeID == "":
		return errors.New("replica: NodeID is required")
	case o.Term == nil:
		return errors.New("replica: Term is required")
	case len(o.Files) > 0 && o.DataDir == "":
		return errors.New("replica: DataDir is required to mirror files")
	case o.MaxBytes < 0 || o.Wait < 0:
		return errors.New("replica: MaxBytes and Wait must not be negative")
	}
	_, err := cleanRoots(o.Files)
	return err
}

// Source serves the primary's log, cursors and state files to a standby: it
// answers fetches on one NATS subject. It is safe for concurrent use.
type Source struct {
	buf   buffer.Engine
	o     SourceOptions
	roots []string
	sub   *nats.Subscription
	log   *slog.Logger
	m     *sourceMetrics
	// budget bounds a reply's records and files; hardMax one record alone.
	budget, hardMax int

	ctx    context.Context // ends at Close: a waiting fetch returns
	cancel context.CancelFunc

	// mu serves one fetch at a time and guards the fields below.
	mu         sync.Mutex
	closed     bool
	lastMember string              // the standby r was opened for
	r          buffer.RecordReader // continues where the last reply ended
	rNext      uint64              // the end of the last reply, where r continues
	held       *heldRecord         // read by r but left out of the last reply
	atEnd      bool                // the last reply reached the durable end
	cache      map[string]fileStat // digests of the mirrored files
	warned     map[string][digestSize]byte
	body       []byte

	// stateMu guards the standby's progress.
	stateMu     sync.Mutex
	member      string
	next        uint64
	lastContact time.Time
	changed     chan struct{} // closed and replaced when next changes
}

type heldRecord struct {
	off     uint64
	payload []byte
}

// NewSource subscribes to subject on nc (no queue group: one primary
// answers) and serves fetches until Close. The NATS server's max_payload
// must carry one record of buffer.MaxRecordSize with its header.
func NewSource(nc *nats.Conn, subject string, buf buffer.Engine, o SourceOptions) (*Source, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	roots, _ := cleanRoots(o.Files)
	hardMax := int(nc.MaxPayload()) - headerReserve
	if hardMax < buffer.MaxRecordSize+16 {
		return nil, fmt.Errorf("replica: the NATS server's max_payload %d cannot carry a record of %d bytes: set it to 8 MiB",
			nc.MaxPayload(), buffer.MaxRecordSize)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Source{
		buf: buf, o: o, roots: roots,
		log: o.Logger.With("component", "replica"), m: newSourceMetrics(o.Registerer),
		budget: min(o.MaxBytes, hardMax), hardMax: hardMax,
		ctx: ctx, cancel: cancel,
		cache: map[string]fileStat{}, warned: map[string][digestSize]byte{},
		changed: make(chan struct{}),
	}
	sub, err := nc.Subscribe(subject, s.serve)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("replica: subscribe %s: %w", subject, err)
	}
	// The server has the subscription once the flush returns: a fetch sent
	// right after NewSource finds a responder.
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		sub.Unsubscribe()
		cancel()
		return nil, fmt.Errorf("replica: subscribe %s: %w", subject, err)
	}
	s.sub = sub
	return s, nil
}

// Close unsubscribes, ends a fetch in progress and releases the reader.
func (s *Source) Close() error {
	err := s.sub.Unsubscribe()
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.r = closeReader(s.r)
	return err
}

// Replicated returns the standby that fetched last and its next offset: it
// holds every offset below next durably, as of lastContact.
func (s *Source) Replicated() (member string, next uint64, lastContact time.Time) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.member, s.next, s.lastContact
}

// WaitReplicated returns once the standby holds every offset below off
// durably (sync replication acknowledges then), or with ctx's error.
func (s *Source) WaitReplicated(ctx context.Context, off uint64) error {
	for {
		s.stateMu.Lock()
		next, changed := s.next, s.changed
		s.stateMu.Unlock()
		if next >= off {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

func (s *Source) noteReplicated(member string, next uint64) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.member, s.lastContact = member, time.Now()
	if next != s.next {
		s.next = next
		close(s.changed)
		s.changed = make(chan struct{})
	}
	s.m.replicated.Set(float64(next))
}

// serve answers one fetch.
func (s *Source) serve(msg *nats.Msg) {
	out, err := s.handle(msg.Data)
	if err != nil {
		s.m.fetchErrors.WithLabelValues(reason(err)).Inc()
		s.log.Warn("replication fetch refused", "err", err)
		out = encodeError(errCode(err), err.Error())
	}
	if err := msg.Respond(out); err != nil {
		s.log.Warn("replication reply not sent", "err", err)
	}
}

func (s *Source) handle(data []byte) ([]byte, error) {
	f, err := decodeFetch(data)
	if err != nil {
		return nil, err
	}
	term, ok := s.o.Term()
	switch {
	case !ok:
		return nil, errorf(ErrNotPrimary, "this member holds no current term and serves no standby")
	case f.nodeID != s.o.NodeID:
		return nil, errorf(ErrNodeID, "the standby %s has node id %q, this primary %q", f.member, f.nodeID, s.o.NodeID)
	case f.term != term:
		return nil, errorf(ErrTerm, "the standby %s follows term %d, this primary holds term %d", f.member, f.term, term)
	}
	if next := s.buf.NextOffset(); f.from > next {
		return nil, errorf(ErrDiverged, "the standby %s holds offsets up to %d, beyond this primary's next offset %d", f.member, f.from, next)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errorf(ErrNotPrimary, "replication source closed")
	}
	if f.member != s.lastMember {
		s.r, s.lastMember, s.atEnd = closeReader(s.r), f.member, false
	}
	if f.prev != nil && f.from > 0 && (s.r == nil || s.rNext != f.from) {
		if err := s.checkPrev(f.from, *f.prev); err != nil {
			return nil, err
		}
	}
	// From here the standby holds every offset below from durably.
	s.m.fetches.Inc()
	s.noteReplicated(f.member, f.from)
	accepted := false
	if f.report != nil && s.o.OnReport != nil {
		if err := s.o.OnReport(f.member, f.report); err != nil {
			s.log.Warn("standby report not accepted; it comes again with the next fetch", "member", f.member, "err", err)
		} else {
			accepted = true
		}
	}
	rep := &reply{term: term, nodeID: s.o.NodeID, accepted: accepted, start: f.from, roots: s.roots}
	// The cursors before the records: every position in them is then at or
	// below the reply's end once the reply reaches the durable end.
	rep.cursors = s.buf.Cursors()
	fileBytes := 0
	if f.digests != nil && s.atEnd {
		if fileBytes, err = s.changedFiles(f.digests, rep); err != nil {
			return nil, fmt.Errorf("%w: mirrored files: %w", ErrSource, err)
		}
	}
	count, last, err := s.readRecords(f.from, s.budget-fileBytes, len(rep.files)+len(rep.deletes) > 0)
	if err != nil {
		return nil, err
	}
	if !s.atEnd {
		// Files refer to records up to the durable end when they were
		// read: they travel only with a reply that reaches it.
		rep.files, rep.deletes = nil, nil
	}
	rep.end = f.from
	if count > 0 {
		rep.end = last + 1
	}
	rep.first, rep.next, rep.durable = s.buf.FirstOffset(), s.buf.NextOffset(), s.buf.DurableOffset()
	out := rep.encodeHeader(make([]byte, 0, len(s.body)+fileBytes+1024))
	out = binary.AppendUvarint(out, uint64(count))
	out = append(out, s.body...)
	if len(out) > s.hardMax+headerReserve {
		return nil, errorf(ErrSource, "reply of %d bytes exceeds the NATS max_payload (too many cursors?)", len(out))
	}
	return out, nil
}

// readRecords reads the records from from on into s.body, at most budget
// bytes of them (at least one), waiting up to Wait for one if none is
// durable there yet (and haveFiles is false). It keeps the reader for the
// next fetch when that continues where this one ends.
func (s *Source) readRecords(from uint64, budget int, haveFiles bool) (count int, last uint64, err error) {
	if s.r == nil || s.rNext != from {
		closeReader(s.r)
		s.r, s.held = s.buf.NewReader(from), nil
	}
	s.body = s.body[:0]
	deadline := time.Now().Add(s.o.Wait)
	pause := time.Millisecond
	prev := from
	for {
		durable := s.buf.DurableOffset()
		s.atEnd = false
		for {
			var off uint64
			var p []byte
			if h := s.held; h != nil {
				off, p = h.off, h.payload
			} else {
				off, p, err = s.r.Next()
				if errors.Is(err, io.EOF) {
					s.atEnd = true
					break
				}
				if err != nil {
					s.r, s.held = closeReader(s.r), nil
					return 0, 0, fmt.Errorf("%w: read the log at %d: %w", ErrSource, prev, err)
				}
			}
			size := len(p) + 2*binary.MaxVarintLen64
			if (count > 0 || haveFiles) && len(s.body)+size > budget {
				if s.held == nil {
					s.held = &heldRecord{off: off, payload: slices.Clone(p)}
				}
				break
			}
			if size > s.hardMax {
				s.r, s.held = closeReader(s.r), nil // read again by the next fetch
				return 0, 0, errorf(ErrSource, "the record at offset %d is %d bytes, over the NATS max_payload", off, len(p))
			}
			s.body = appendRecord(s.body, prev, off, p)
			prev, last, s.held = off, off, nil
			count++
			if len(s.body) >= budget {
				break
			}
		}
		if count > 0 {
			s.rNext = last + 1
		} else {
			s.rNext = from
		}
		remaining := time.Until(deadline)
		if count > 0 || haveFiles || remaining <= 0 {
			return count, last, nil
		}
		if durable > from {
			// Durable but not yet visible to the reader, or removed
			// at the tail: look again shortly.
			pause = min(2*pause, 50*time.Millisecond)
			select {
			case <-s.ctx.Done():
				return 0, 0, errorf(ErrNotPrimary, "replication source closed")
			case <-time.After(min(pause, remaining)):
			}
			continue
		}
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		err := s.buf.WaitDurable(ctx, from+1)
		cancel()
		if s.ctx.Err() != nil {
			return 0, 0, errorf(ErrNotPrimary, "replication source closed")
		}
		if err != nil && ctx.Err() == nil {
			return 0, 0, fmt.Errorf("%w: %w", ErrSource, err)
		}
	}
}

// changedFiles adds to rep the mirrored files whose content differs from
// the standby's digests, within the reply bound, and the standby's files the
// primary no longer has. It returns the bytes of file content added.
func (s *Source) changedFiles(theirs map[string][digestSize]byte, rep *reply) (int, error) {
	ours, err := digests(s.o.DataDir, s.roots, s.cache)
	if err != nil {
		return 0, err
	}
	used := 0
	for _, name := range sortedKeys(ours) {
		sum := ours[name]
		if t, ok := theirs[name]; ok && t == sum {
			continue
		}
		c := s.cache[name]
		if int(c.size) > s.budget {
			if s.warned[name] != sum {
				s.warned[name] = sum
				s.m.skipped.Inc()
				s.log.Warn("mirrored file exceeds the reply bound and is not sent to the standby", "file", name, "bytes", c.size, "max_bytes", s.budget)
			}
			continue
		}
		if used+int(c.size) > s.budget {
			continue // next time
		}
		data, err := os.ReadFile(filepath.Join(s.o.DataDir, filepath.FromSlash(name)))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		rep.files = append(rep.files, mirrored{name: name, data: data})
		used += len(data)
	}
	for _, name := range sortedKeys(theirs) {
		if _, ok := ours[name]; !ok && underRoots(s.roots, name) {
			rep.deletes = append(rep.deletes, name)
		}
	}
	return used, nil
}

// checkPrev checks that the standby's record below from, of checksum crc, is
// the primary's; where the primary holds none there is nothing to check.
func (s *Source) checkPrev(from uint64, crc uint32) error {
	r := s.buf.NewReader(from - 1)
	defer r.Close()
	off, p, err := r.Next()
	if errors.Is(err, io.EOF) || (err == nil && off != from-1) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: read the log at %d: %w", ErrSource, from-1, err)
	}
	if crc32.Checksum(p, castagnoli) != crc {
		return errorf(ErrDiverged, "the standby's record at offset %d is not this primary's: its log holds records this primary never wrote", from-1)
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// closeReader closes r if it is not nil and returns nil.
func closeReader(r buffer.RecordReader) buffer.RecordReader {
	if r != nil {
		r.Close()
	}
	return nil
}
