// Package pebblelog is holdfast's third buffer engine (buffer.engine: pebble): a
// buffer.Engine that keeps records, cursors and its bookkeeping in an LSM
// key-value store, github.com/cockroachdb/pebble/v2. The key layout and what a
// crash leaves are in docs/format/pebble.md.
//
// What it promises, like the native log: Append returns only after the records
// are in a Pebble batch committed with pebble.Sync (the WAL is fsync'd); offsets
// increase by one per record and are never reused, also across restarts (the next
// offset is persisted in the same batch as the records); readers see only durable
// records, in offset order, never a gap that later fills; CommitCursors is one
// synced batch, all or nothing; retention deletes the oldest records once the
// stored bytes exceed Options.MaxBytes, first handing those no reader cursor had
// passed to Options.OnUnreadDeleted; Remove (buffer.Remover) deletes chosen
// durable records ahead of retention in one synced batch, readers passing over
// them from the moment they are hidden; after a failed commit the engine
// acknowledges nothing more until it is opened again.
//
// Who does what: Pebble does all disk I/O, the WAL and its fsync, memtables,
// sstables, compaction, checksums and crash recovery (WAL replay); retention
// uses its Excise, which drops whole sstables instead of leaving range
// tombstones for compactions. This package assigns offsets, groups concurrent
// appenders into one batch and one fsync (group commit, a single committer
// goroutine; buffer.Commits, the bookkeeping every engine shares, keeps the
// offsets, the durable offset and the failed state), decides when an append
// counts as durable, keeps a sparse byte index for retention and BytesFrom,
// keeps free disk space in reserve so that a full disk fails an append rather
// than Pebble's background work, turns Pebble's Fatalf into the failed state,
// and reports through buffer.Metrics (prometheus/client_golang) and log/slog.
//
// Memory: an 8 MiB block cache and at most two memtables of at most 8 MiB;
// retention keeps max_bytes minus eight memtables (at least half of
// max_bytes) of records, so that Pebble's files stay near max_bytes.
package pebblelog

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// Format constants (docs/format/pebble.md). Records sort before every other
// key, so the sstables holding them follow each other in key order and do not
// overlap the small region where cursors, index marks and the meta key live.
const (
	prefixRecord = 'R'
	prefixCursor = 'c'
	prefixIndex  = 'i'
	prefixMeta   = 'm'

	formatVersion = 1
	metaSize      = 2 + 8 + 8

	// recordOverhead is added to a payload's length to estimate its stored
	// bytes: 9-byte key, 8-byte internal trailer, ~3 bytes of block encoding.
	recordOverhead = 20

	// pebbleDir is the store's directory inside Options.Dir.
	pebbleDir = "pebble"

	// pinnedFormat is the format major version the store is created with and
	// kept at, whatever the newest one the library knows.
	pinnedFormat = pebble.FormatTableFormatV6
)

// Sizing for a small device (docs/format/pebble.md, Sizes and Memory).
const (
	cacheSize     = 8 << 20  // Pebble's block cache
	memTableSize  = 8 << 20  // largest memtable
	minMemTable   = 64 << 10 // smallest memtable
	memTableStops = 2        // memtables queued before writes stall
	maxOpenFiles  = 256
	minTableSize  = 64 << 10 // sstable target size bounds
	maxTableSize  = 4 << 20
	lsmOverhead   = 8                // memtables' worth of Pebble files besides the records
	reserveExtra  = 256 << 10        // free space kept besides four memtables
	chunksPerKeep = 64               // an index mark every keep/64 stored bytes,
	minChunk      = 1 << 10          // but at least this
	maxChunk      = 1 << 20          // and at most this apart
	readChunk     = 256 << 10        // a reader copies this many payload bytes per iterator,
	readRecords   = 4096             // or this many records
	closeTimeout  = 10 * time.Second // Close waits this long for Pebble after a failure
)

var (
	metaKey = []byte{prefixMeta}

	_ buffer.Engine = (*Log)(nil)
)

// Log is the Pebble buffer engine. It is safe for concurrent use.
type Log struct {
	opts buffer.Options
	dir  string // the Pebble directory
	db   *pebble.DB
	log  *slog.Logger
	m    *buffer.Metrics
	fs   vfs.FS // Pebble's file system, for free space

	// Sizes derived from the options and the file system (docs/format/pebble.md).
	keep     uint64 // retention keeps at most this many stored bytes
	chunk    uint64 // stored bytes between two index marks
	memTable uint64 // Pebble's memtable size
	reserve  uint64 // free disk space appends leave for Pebble's own work

	commits *buffer.Commits // set by open once the store is loaded
	// The commits' lock guards the group being filled and the spare one.
	fill  *group
	spare *group

	first atomic.Uint64 // oldest offset held: readers pass over offsets below it

	// writeMu serialises the writers of records, index marks and the meta
	// key: the committer holds it for a commit and the retention after it,
	// Remove for its delete batch (remove.go).
	writeMu sync.Mutex
	// removeMu lets one Remove run at a time.
	removeMu sync.Mutex
	// floor is the lowest offset a Remove in progress has hidden, or
	// noFloor: retention cuts no later than it. Remove sets it under
	// writeMu, before it hides the records (remove.go).
	floor atomic.Uint64
	// hidden holds the records being removed and those removed since the
	// engine was opened: readers pass over them (remove.go).
	hidden buffer.Hidden

	// idxMu guards index and the totals: the index marks held, and the
	// cumulative stored bytes (cum) at end, the durable end. Only the
	// committer, Remove (both holding writeMu) and Open change them.
	idxMu sync.RWMutex
	index []mark
	cum   uint64
	end   uint64

	// dbMu is held shared by everything that uses db outside the committer
	// (readers, cursors, stats) and exclusively by Close to close it.
	dbMu     sync.RWMutex
	dbClosed bool
	lastDisk atomic.Int64 // disk use at the last Stats, for Stats after Close

	cursorMu sync.Mutex
	cursors  map[string]uint64 // guarded by cursorMu
}

// mark is an index mark: cum stored bytes were appended before offset off,
// less those of the records Remove has deleted since.
type mark struct {
	off uint64
	cum uint64
}

// group is one commit group: the records of the appenders that arrived while
// the previous group was being committed, made durable by one synced batch.
type group struct {
	buffer.Ack
	payloads [][]byte // the appenders' slices; they wait until the group is finished
	bytes    int      // sum of the payload lengths
	first    uint64   // offset of payloads[0]
	next     uint64   // offset after the last payload
}

func newGroup() *group { return &group{Ack: buffer.NewAck()} }

// Open opens or creates the store in <o.Dir>/pebble and starts the committer.
//
// It uses Dir, MaxBytes (retention; default 1 GiB), MaxPendingBytes (appenders
// block while more payload bytes than this wait for the committer; default
// 32 MiB), Logger (Pebble's own messages go to it: informational ones at Debug,
// errors at Warn; default: discarded), Metrics (default: unregistered) and
// OnUnreadDeleted (called by retention on the committer goroutine, or during
// Open when the store is over a smaller MaxBytes; it must not append or
// Remove).
// SegmentBytes and FS do not apply: Pebble has no segments and does its own
// file I/O through its own VFS.
func Open(o buffer.Options) (*Log, error) { return open(o, nil) }

// open is Open with a hook that may adjust Pebble's options (tests inject
// faults through it).
func open(o buffer.Options, tune func(*pebble.Options)) (l *Log, err error) {
	o, err = withDefaults(o)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	l = &Log{
		opts:  o,
		dir:   filepath.Join(o.Dir, pebbleDir),
		log:   o.Logger,
		m:     o.Metrics,
		fill:  newGroup(),
		spare: newGroup(),
	}
	l.floor.Store(noFloor)
	if err := makeDirs(o.Dir, l.dir); err != nil {
		return nil, err
	}
	popts := l.pebbleOptions()
	if tune != nil {
		tune(popts)
	}
	l.fs = cmp.Or[vfs.FS](popts.FS, vfs.Default)
	l.size(popts)
	if err := catchFatal(func() (err error) { l.db, err = pebble.Open(l.dir, popts); return err }); err != nil {
		return nil, fmt.Errorf("pebblelog: open %s: %w", l.dir, err)
	}
	if err := l.load(); err != nil {
		_ = catchFatal(l.db.Close)
		return nil, fmt.Errorf("pebblelog: open %s: %w", l.dir, err)
	}
	next := l.end // at open, the durable end is the next offset
	l.commits = buffer.NewCommits(next, l.log, l.m, "pebble buffer failed; no further appends will be acknowledged")
	l.fill.first, l.fill.next = next, next
	l.m.Segments.Set(0)
	l.m.Failed.Set(0)
	if err := l.retain(next); err != nil {
		_ = catchFatal(l.db.Close)
		return nil, fmt.Errorf("pebblelog: open %s: retention: %w", l.dir, err)
	}
	l.setBytesMetric()
	l.log.Info("pebble buffer opened", "dir", l.dir, "first_offset", l.first.Load(), "next_offset", next,
		"took", time.Since(start).Round(time.Microsecond))
	go buffer.RunCommitter(l.commits, l.takeLocked, l.commitGroup)
	return l, nil
}

func withDefaults(o buffer.Options) (buffer.Options, error) {
	o = o.WithDefaults()
	switch {
	case o.Dir == "":
		return o, errors.New("pebblelog: Dir is required")
	case o.MaxBytes < 0:
		return o, fmt.Errorf("pebblelog: max_bytes %d is negative", o.MaxBytes)
	case o.MaxPendingBytes < buffer.MaxRecordSize:
		return o, fmt.Errorf("pebblelog: max_pending_bytes %d is below one maximal record", o.MaxPendingBytes)
	}
	return o, nil
}

// makeDirs creates dir and the Pebble directory in it (mode 0700) and fsyncs
// dir, so that the Pebble directory's entry survives a crash.
func makeDirs(dir, pdir string) error {
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return fmt.Errorf("pebblelog: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("pebblelog: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pebblelog: fsync %s: %w", dir, err)
	}
	return nil
}

// size derives the sizes that depend on MaxBytes and on the file system
// holding Dir, and sets Pebble's memtable size.
//
// The WAL holds what the memtables hold and Pebble flushes a memtable by
// writing it out again, so the memtable is at most an eighth of MaxBytes and a
// 32nd of the file system; appends keep four memtables and 256 KiB free for
// flushes, MANIFEST and OPTIONS writes (see checkSpace).
func (l *Log) size(o *pebble.Options) {
	limit := int64(memTableSize)
	if du, err := l.fs.GetDiskUsage(l.dir); err == nil {
		limit = min(limit, int64(du.TotalBytes/32))
	} else {
		l.log.Warn("pebble buffer: cannot read the file system's size", "dir", l.dir, "err", err)
	}
	l.memTable = uint64(max(min(limit, l.opts.MaxBytes/8), minMemTable))
	l.reserve = 4*l.memTable + reserveExtra
	// Pebble's files hold, besides the records, up to about eight memtables:
	// WAL files live and awaiting reuse, L0 tables not yet compacted, tables
	// awaiting deletion. Measured: 6–7 memtables at 16 MiB and 160 MiB.
	l.keep = max(uint64(l.opts.MaxBytes)/2, uint64(l.opts.MaxBytes)-min(uint64(l.opts.MaxBytes), lsmOverhead*l.memTable))
	l.chunk = min(max(l.keep/chunksPerKeep, minChunk), maxChunk)
	o.MemTableSize = l.memTable
	// The same small sstable size on every level (Pebble doubles it per level
	// by default, up to 128 MiB in L6): retention's excise drops whole
	// sstables and turns at most one per level into a virtual sstable, whose
	// file stays until the excise reaches its end; small tables keep that
	// waste small.
	tfs := int64(min(max(l.keep/64, minTableSize), maxTableSize))
	for i := range o.TargetFileSizes {
		o.TargetFileSizes[i] = tfs
	}
}

func (l *Log) pebbleOptions() *pebble.Options {
	lg := pebbleLogger{l: l}
	return &pebble.Options{
		CacheSize:                   cacheSize,
		MemTableStopWritesThreshold: memTableStops,
		MaxOpenFiles:                maxOpenFiles,
		FormatMajorVersion:          pinnedFormat,
		Logger:                      lg,
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				l.log.Warn("pebble background error", "err", err)
			},
			DataCorruption: func(info pebble.DataCorruptionInfo) {
				// Reported to the read that met it as well; never fatal here.
				l.log.Error("pebble found corrupt data", "info", info.String())
			},
			DiskSlow: func(info pebble.DiskSlowInfo) {
				l.log.Warn("pebble disk slow", "info", info.String())
			},
		},
	}
}

// load reads the meta key, the index marks and the cursors, and checks the
// invariants of docs/format/pebble.md.
func (l *Log) load() error {
	v, closer, err := l.db.Get(metaKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		it, err := l.db.NewIter(nil)
		if err != nil {
			return err
		}
		empty := !it.First()
		err = cmp.Or(it.Error(), it.Close())
		if err != nil {
			return err
		}
		if !empty {
			return errors.New("not a holdfast buffer: keys without a meta key")
		}
		// A new store: the meta key marks it as a holdfast buffer.
		if err := catchFatal(func() error { return l.db.Set(metaKey, metaValue(0, 0), pebble.Sync) }); err != nil {
			return fmt.Errorf("write meta: %w", err)
		}
	case err != nil:
		return fmt.Errorf("read meta: %w", err)
	default:
		if len(v) != metaSize || binary.BigEndian.Uint16(v) != formatVersion {
			closer.Close()
			return fmt.Errorf("unsupported meta value (%d bytes, version %d)", len(v), binary.BigEndian.Uint16(v))
		}
		l.end = binary.BigEndian.Uint64(v[2:])
		l.cum = binary.BigEndian.Uint64(v[10:])
		closer.Close()
	}

	if err := l.scan(prefixIndex, func(k, v []byte) error {
		if len(k) != 9 || len(v) != 8 {
			return fmt.Errorf("bad index mark %x", k)
		}
		m := mark{off: binary.BigEndian.Uint64(k[1:]), cum: binary.BigEndian.Uint64(v)}
		if n := len(l.index); n > 0 && m.cum < l.index[n-1].cum || m.off >= l.end || m.cum > l.cum {
			return fmt.Errorf("index mark %d → %d out of order", m.off, m.cum)
		}
		l.index = append(l.index, m)
		return nil
	}); err != nil {
		return err
	}

	first, last, ok, err := l.recordRange()
	if err != nil {
		return err
	}
	held := l.end // the first record held; the next offset if none is
	if ok {
		held = first
	}
	// j is the last mark at or below the first record held. Remove may have
	// deleted the records from it up to the first one held (and their marks
	// but this one, in the same batch).
	j := sort.Search(len(l.index), func(j int) bool { return l.index[j].off > held }) - 1
	if ok && (j < 0 || last >= l.end) {
		return fmt.Errorf("records %d…%d do not match the index and next offset %d", first, last, l.end)
	}
	if j > 0 {
		// Retention excised the records below a mark but a crash lost the
		// deletion of the marks below it: finish it.
		l.log.Info("dropping index marks of records deleted before a crash", "marks", j, "first_offset", held)
		if err := l.deleteMarks(l.index[j].off); err != nil {
			return err
		}
		l.index = l.index[j:]
	}
	l.first.Store(held)

	l.cursors = map[string]uint64{}
	return l.scan(prefixCursor, func(k, v []byte) error {
		if len(k) < 2 || len(v) != 8 {
			return fmt.Errorf("bad cursor key %q", k)
		}
		l.cursors[string(k[1:])] = binary.BigEndian.Uint64(v)
		return nil
	})
}

// recordRange returns the first and last record offsets held.
func (l *Log) recordRange() (first, last uint64, ok bool, err error) {
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixRecord}, UpperBound: []byte{prefixRecord + 1}})
	if err != nil {
		return 0, 0, false, err
	}
	if it.First() {
		first = binary.BigEndian.Uint64(it.Key()[1:])
		if it.Last() {
			last, ok = binary.BigEndian.Uint64(it.Key()[1:]), true
		}
	}
	return first, last, ok, cmp.Or(it.Error(), it.Close())
}

// scan calls fn for every key with the given prefix byte, in order.
func (l *Log) scan(prefix byte, fn func(k, v []byte) error) error {
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err == nil {
			err = fn(it.Key(), v)
		}
		if err != nil {
			it.Close()
			return err
		}
	}
	return cmp.Or(it.Error(), it.Close())
}

func recordKey(dst []byte, off uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixRecord), off)
}

func indexKey(dst []byte, off uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixIndex), off)
}

func cursorKey(name string) []byte { return append([]byte{prefixCursor}, name...) }

func metaValue(next, cum uint64) []byte {
	v := binary.BigEndian.AppendUint16(make([]byte, 0, metaSize), formatVersion)
	v = binary.BigEndian.AppendUint64(v, next)
	return binary.BigEndian.AppendUint64(v, cum)
}

// NextOffset returns the offset the next appended record will get.
func (l *Log) NextOffset() uint64 { return l.commits.NextOffset() }

// DurableOffset returns the offset below which every record is durable.
func (l *Log) DurableOffset() uint64 { return l.commits.DurableOffset() }

// FirstOffset returns the oldest offset still held.
func (l *Log) FirstOffset() uint64 { return l.first.Load() }

// Err returns the error that put the engine in the failed state, or nil.
func (l *Log) Err() error { return l.commits.Err() }

// Stats returns the engine's size: Bytes is the disk use of the Pebble
// directory (WAL, sstables, MANIFEST, files awaiting deletion), Segments and
// QuarantinedRecords are always 0. Records deleted by Remove leave Bytes
// when compactions drop them; BytesFrom counts them out at once.
func (l *Log) Stats() buffer.Stats {
	l.dbMu.RLock()
	if !l.dbClosed {
		l.lastDisk.Store(int64(l.db.Metrics().DiskSpaceUsage()))
	}
	l.dbMu.RUnlock()
	return buffer.Stats{
		Bytes:       l.lastDisk.Load(),
		FirstOffset: l.FirstOffset(),
		NextOffset:  l.DurableOffset(),
	}
}

// Close waits for the appends in flight to be committed, stops the committer
// and closes the store. Readers fail with buffer.ErrClosed once they need the
// store again.
func (l *Log) Close() error {
	if err := l.commits.Close(); err != nil {
		return err
	}

	l.dbMu.Lock()
	defer l.dbMu.Unlock()
	l.lastDisk.Store(int64(l.db.Metrics().DiskSpaceUsage()))
	l.dbClosed = true
	if l.Err() == nil {
		if err := catchFatal(l.db.Close); err != nil {
			return fmt.Errorf("pebblelog: close: %w", err)
		}
		return nil
	}
	// After a failure Pebble may report the broken WAL again, or, if it failed
	// half-way through a MANIFEST update it treats as fatal, never return.
	done := make(chan error, 1)
	go func() { done <- catchFatal(l.db.Close) }()
	select {
	case err := <-done:
		if err != nil {
			l.log.Debug("close pebble after the failure", "err", err)
		}
		return nil
	case <-time.After(closeTimeout):
		l.log.Error("pebble did not close after the failure; its directory stays locked until the process exits",
			"dir", l.dir)
		return fmt.Errorf("pebblelog: close after failure: pebble did not return within %v", closeTimeout)
	}
}

// WaitDurable blocks until every offset below off is durable, the engine fails
// or is closed, or ctx ends.
func (l *Log) WaitDurable(ctx context.Context, off uint64) error {
	return l.commits.WaitDurable(ctx, off)
}

// fatalError is what pebbleLogger.Fatalf panics with: the message, and the
// first error among its arguments as the cause.
type fatalError struct {
	msg string
	err error
}

func (e *fatalError) Error() string { return "pebble: fatal: " + e.msg }
func (e *fatalError) Unwrap() error { return e.err }

// catchFatal runs fn, turning a Pebble Fatalf (a fatalError panic) into an
// error. Other panics propagate.
func catchFatal(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(*fatalError)
			if !ok {
				panic(r)
			}
			err = fe
		}
	}()
	return fn()
}

// pebbleLogger routes Pebble's logging to the engine's slog.Logger: Infof at
// Debug, Errorf at Warn, Fatalf at Error. Fatalf, which Pebble expects never
// to return, then panics with a *fatalError: in the engine's own calls into
// Pebble catchFatal turns it into an error that fails the engine; in Pebble's
// background goroutines it ends the process, as Pebble's default logger
// (os.Exit) would.
type pebbleLogger struct{ l *Log }

func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.log.Enabled(context.Background(), slog.LevelDebug) {
		p.l.log.Debug("pebble: " + fmt.Sprintf(format, args...))
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.log.Warn("pebble: " + fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	e := &fatalError{msg: fmt.Sprintf(format, args...)}
	for _, a := range args {
		if err, ok := a.(error); ok {
			e.err = err
			break
		}
	}
	p.l.log.Error("pebble: fatal: " + e.msg)
	panic(e)
}
