// Package buffer is holdfast's durable buffer: a segmented, append-only log of
// opaque records with CRC-32C framing, group commit, persisted reader cursors and
// retention by size. The byte layout is in docs/format/log.md; what the payload
// bytes mean belongs to package event.
//
// What it promises: Append returns only after the records are fsync'd; offsets
// increase by one per record and are never reused; readers see only fsync'd
// records; on open a torn tail is truncated and damage inside the log is
// quarantined and counted, never skipped silently (in a sealed segment that
// open took from its seal file, log_seal.go, when a reader first meets it);
// after a failed write or fsync the log acknowledges nothing more. Opening
// reads only the active segment and the seals of the sealed ones.
//
// The SQLite and Pebble engines (packages sqlitelog and pebblelog) keep the same
// promises behind the same Engine interface. The group-commit bookkeeping all
// three share — offset assignment, the durable offset and WaitDurable, waking
// the committer, the failed and closed states — is one core, Commits
// (commits.go); each engine keeps what a commit group holds and how it is made
// durable.
//
// All disk I/O goes through vfs.FS. prometheus/client_golang carries the metrics.
package buffer

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// Format constants (docs/format/log.md).
const (
	segmentHeaderSize = 16
	frameHeaderSize   = 16
	// MaxRecordSize is the largest payload a frame may carry.
	MaxRecordSize = 4 << 20
	segmentMagic  = "HFLG"
	formatVersion = 1
	// sparseEvery is how many bytes of segment lie between two entries of the
	// in-memory offset → position index.
	sparseEvery = 4096
)

var (
	// ErrFailed is returned by Append once a write or fsync has failed.
	ErrFailed = errors.New("buffer: log failed")
	// ErrClosed is returned by Append after Close.
	ErrClosed = errors.New("buffer: log closed")
	// ErrTooLarge is returned for a payload over MaxRecordSize or an empty one.
	ErrTooLarge = errors.New("buffer: record size out of range")
)

// CorruptionError reports damaged bytes in a segment.
type CorruptionError struct {
	Segment string // file name
	Pos     int64  // byte position of the damage in the segment
	Err     error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("buffer: corruption in segment %s at byte %d: %v", e.Segment, e.Pos, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }

// Options configure a Log. Zero fields take the defaults.
type Options struct {
	Dir          string // required
	FS           vfs.FS // default vfs.OS
	SegmentBytes int64  // roll the active segment at this size; default 16 MiB
	MaxBytes     int64  // retention: total size kept; default 1 GiB
	// MaxPendingBytes bounds the bytes waiting for the writer; appenders block
	// beyond it. Default 32 MiB.
	MaxPendingBytes int
	// TailBytes is how many of the newest committed bytes the native log
	// keeps in memory, so that readers at the live end do not read them
	// back from the file (tail.go). Default DefaultTailBytes; negative: none.
	TailBytes int
	Logger    *slog.Logger
	Metrics   *Metrics // default: unregistered metrics
	// OnUnreadDeleted, if set, is called by retention just before it deletes
	// records no reader had passed (below the slowest position cursor), with
	// their offsets [from, to) and a reader over them, valid only during the
	// call. It runs on the log's writer goroutine: it must not append. Every
	// engine calls it before the deletion is durable (the native log before
	// it unlinks the segment, SQLite before the COMMIT that deletes the
	// rows, Pebble before the excise), so what the hook fsyncs before it
	// returns survives any crash that the deletion does (the node's
	// ledger-intent file, docs/format/ledger.md).
	OnUnreadDeleted func(from, to uint64, r RecordReader)
}

// WithDefaults returns o with zero fields filled in; every engine takes the
// same defaults.
func (o Options) WithDefaults() Options {
	if o.FS == nil {
		o.FS = vfs.OS
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = 16 << 20
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 1 << 30
	}
	if o.MaxPendingBytes == 0 {
		o.MaxPendingBytes = 32 << 20
	}
	if o.TailBytes == 0 {
		o.TailBytes = DefaultTailBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return o
}

// Validate reports the first option that cannot work.
func (o Options) Validate() error {
	switch {
	case o.Dir == "":
		return errors.New("buffer: Dir is required")
	case o.SegmentBytes < 4096:
		return fmt.Errorf("buffer: segment_bytes %d is below the minimum of 4096", o.SegmentBytes)
	case o.MaxBytes < 2*o.SegmentBytes:
		return fmt.Errorf("buffer: max_bytes %d must be at least twice segment_bytes %d", o.MaxBytes, o.SegmentBytes)
	case o.MaxPendingBytes < MaxRecordSize+frameHeaderSize:
		return fmt.Errorf("buffer: max_pending_bytes %d is below one maximal record", o.MaxPendingBytes)
	}
	return nil
}

// Log is the native buffer engine. It is safe for concurrent use.
type Log struct {
	opts Options
	fs   vfs.FS
	dir  string
	log  *slog.Logger
	m    *Metrics

	commits *Commits // set by Open once the log is recovered
	// The commits' lock guards the group being filled and the spare one.
	fill  *group
	spare *group // an empty group ready to become fill

	// segMu guards segments and the mutable fields of the segments in it.
	segMu    sync.RWMutex
	segments []*segment // oldest first; the last one is active
	active   vfs.File   // owned by the writer goroutine

	cursorMu sync.Mutex
	cursors  map[string]uint64 // guarded by cursorMu

	quarantined atomic.Int64 // records lost to corruption found on open

	tail tail // the newest committed bytes, for readers at the live end

	removeMu sync.Mutex // one Remove at a time
	sealMu   sync.Mutex // one seal file written at a time
	verifyMu sync.Mutex // one sealed segment scanned for damage at a time
	hidden   Hidden     // records removed, or being removed: readers pass over them
}

// group is one commit group: frames appended while the previous group was being
// written, made durable by a single write and fsync.
type group struct {
	Ack
	buf    []byte
	first  uint64       // offset of the first frame in buf
	next   uint64       // offset after the last frame in buf
	sparse []indexEntry // positions relative to buf
}

func newGroup() *group { return &group{Ack: NewAck()} }

// indexEntry maps an offset to the byte position of its frame.
type indexEntry struct {
	off uint64
	pos int64
}

// segment is one segment file. Fields other than base and name are guarded by
// Log.segMu.
type segment struct {
	base   uint64
	name   string // file name within Dir
	next   uint64 // offset after the last valid record
	size   int64  // bytes of valid, fsync'd data (header included)
	sparse []indexEntry
	bad    []badRange // quarantined ranges, ascending
	// gen counts rewrites; a reader that opened an older file reopens.
	gen uint64
	// removing: a Remove has hidden records of this segment and is not
	// done; retention leaves the segment alone meanwhile.
	removing bool
	// compacted: the header's compacted flag is set.
	compacted bool
	// verified: every frame was checked since open (scanned, or written
	// by this process); false for a segment opened on its seal, which
	// verify scans when a reader finds damage in it.
	verified bool
}

// badRange is a quarantined byte range [from, to) of a segment.
type badRange struct{ from, to int64 }

func segmentName(base uint64) string { return fmt.Sprintf("%020d.seg", base) }

func (l *Log) path(name string) string { return filepath.Join(l.dir, name) }

// Open opens or creates the log in opts.Dir, recovering it as docs/format/log.md
// describes, and starts the writer. Sealed segments with a valid seal are not
// read (log_seal.go): opening costs a scan of the active segment.
func Open(opts Options) (*Log, error) {
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	l := &Log{
		opts:  opts,
		fs:    opts.FS,
		dir:   opts.Dir,
		log:   opts.Logger,
		m:     opts.Metrics,
		fill:  newGroup(),
		spare: newGroup(),
	}
	start := time.Now()
	if err := l.recover(); err != nil {
		return nil, err
	}
	// The active segment's next offset is the log's, at open and after
	// every commit.
	next := l.segments[len(l.segments)-1].next
	l.commits = NewCommits(next, l.log, l.m, "log write failed; no further appends will be acknowledged")
	l.fill.first, l.fill.next = next, next
	l.updateSizeMetrics()
	l.log.Info("log opened", "dir", l.dir, "segments", len(l.segments), "next_offset", next,
		"took", time.Since(start).Round(time.Microsecond))
	go RunCommitter(l.commits, l.takeLocked, l.writeGroup)
	return l, nil
}

// NextOffset returns the offset the next appended record will get.
func (l *Log) NextOffset() uint64 { return l.commits.NextOffset() }

// DurableOffset returns the offset below which every record is fsync'd.
func (l *Log) DurableOffset() uint64 { return l.commits.DurableOffset() }

// FirstOffset returns the oldest offset still held.
func (l *Log) FirstOffset() uint64 {
	l.segMu.RLock()
	defer l.segMu.RUnlock()
	return l.segments[0].base
}

// Err returns the error that put the log in the failed state, or nil.
func (l *Log) Err() error { return l.commits.Err() }

// Stats describe the log's size.
type Stats struct {
	Segments           int
	Bytes              int64
	FirstOffset        uint64
	NextOffset         uint64
	QuarantinedRecords int64
}

// Stats returns the log's current size.
func (l *Log) Stats() Stats {
	l.segMu.RLock()
	s := Stats{Segments: len(l.segments), FirstOffset: l.segments[0].base}
	for _, seg := range l.segments {
		s.Bytes += seg.size
	}
	l.segMu.RUnlock()
	s.NextOffset = l.DurableOffset()
	s.QuarantinedRecords = l.quarantined.Load()
	return s
}

// Close waits for appends in flight to become durable, stops the writer and
// closes the active segment.
func (l *Log) Close() error {
	if err := l.commits.Close(); err != nil {
		return err
	}
	return l.active.Close()
}

func (l *Log) updateSizeMetrics() {
	s := l.Stats()
	l.m.Bytes.Set(float64(s.Bytes))
	l.m.Segments.Set(float64(s.Segments))
}

// BytesFrom estimates the bytes of the log's records from offset off to the
// durable end: exact at segment boundaries and sparse index entries,
// interpolated in between. Offsets already deleted count from the first one
// held.
func (l *Log) BytesFrom(off uint64) int64 {
	l.segMu.RLock()
	defer l.segMu.RUnlock()
	var total int64
	for i := len(l.segments) - 1; i >= 0; i-- {
		seg := l.segments[i]
		if off <= seg.base {
			total += seg.size
			continue
		}
		if off < seg.next {
			// From the nearest index entry at or below off, interpolating
			// over the records after it.
			from := indexEntry{off: seg.base, pos: segmentHeaderSize}
			j, _ := slices.BinarySearchFunc(seg.sparse, off, func(e indexEntry, o uint64) int { return cmp.Compare(e.off, o) })
			if j < len(seg.sparse) && seg.sparse[j].off == off {
				from = seg.sparse[j]
			} else if j > 0 {
				from = seg.sparse[j-1]
			}
			perRecord := float64(seg.size-from.pos) / float64(seg.next-from.off)
			total += seg.size - from.pos - int64(perRecord*float64(off-from.off))
		}
		break
	}
	return total
}
