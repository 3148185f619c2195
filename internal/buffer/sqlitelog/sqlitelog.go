// Package sqlitelog is a buffer.Engine that keeps holdfast's records in one SQLite
// database in WAL mode instead of the native segment files. The schema, settings
// and crash behaviour are in docs/format/sqlite.md.
//
// What it promises, as the native log does: Append returns only after the
// transaction holding its records is committed with synchronous=FULL, that is
// after the WAL is fsync'd; offsets increase by one per record and are never
// reused (the next offset is stored with every commit); readers see only
// committed records, in offset order; CommitCursors is one transaction; retention
// deletes the oldest rows beyond MaxBytes, first handing those no reader cursor
// had passed to Options.OnUnreadDeleted (on the committer goroutine, inside the
// commit's transaction, before the DELETE); after a failed commit the engine
// acknowledges nothing more. Concurrent appenders are batched by one committer
// goroutine into one transaction (group commit), so they share the fsync.
// Remove (buffer.Remover) hides chosen records from every reader before its
// confirm runs and deletes the confirmed ones in the committer's next
// transaction, durably, before it returns; their offsets are not reused.
//
// modernc.org/sqlite provides SQLite (transpiled to Go, no cgo) and its
// database/sql driver "sqlite"; database/sql pools the reading connections;
// SQLite's WAL recovery plays the part of the native log's torn-tail truncation.
// Metrics are buffer.Metrics.
package sqlitelog

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the database/sql driver "sqlite"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// Format constants (docs/format/sqlite.md).
const (
	// DBFile is the database's file name in Options.Dir.
	DBFile        = "buffer.db"
	applicationID = 0x48465351 // "HFSQ"
	formatVersion = 1
	// rowOverhead is the estimate of SQLite's bytes per row, on top of the
	// payload, that retention and BytesFrom count.
	rowOverhead = 24
	// markEvery is how many stored bytes lie between two BytesFrom marks.
	markEvery = 64 << 10
	pageSize  = 4096 // SQLite's default
)

// walCheckpointPages is the WAL size, in pages, at which the committing
// connection checkpoints: SQLite's default of 1000 (4 MiB), or an eighth of
// maxBytes when that is less, so that the WAL stays small beside a small buffer.
func walCheckpointPages(maxBytes int64) int64 {
	return min(max(maxBytes/8/pageSize, 16), 1000)
}

const schema = `
CREATE TABLE records (
  off     INTEGER PRIMARY KEY,
  crc     INTEGER NOT NULL,
  payload BLOB    NOT NULL
);
CREATE TABLE cursors (
  name TEXT    PRIMARY KEY,
  off  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE state (
  id          INTEGER PRIMARY KEY CHECK (id = 0),
  next_offset INTEGER NOT NULL,
  bytes       INTEGER NOT NULL
);
INSERT INTO state (id, next_offset, bytes) VALUES (0, 0, 0);
`

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// The checksum stored with a record is the CRC-32C of its payload followed by
// its offset (u64 LE): payloadCRC then withOffset, so that appenders checksum
// their payloads before they know the offsets.
func payloadCRC(payload []byte) uint32 { return crc32.Update(0, castagnoli, payload) }

func withOffset(crc uint32, off uint64) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], off)
	return crc32.Update(crc, castagnoli, b[:])
}

// CorruptionError reports a record whose payload does not match its checksum.
type CorruptionError struct {
	Offset uint64
	Err    error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("sqlitelog: corrupt record at offset %d: %v", e.Offset, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }

// Log is the SQLite engine. It is safe for concurrent use.
type Log struct {
	opts buffer.Options
	dir  string
	path string // of the database file
	log  *slog.Logger
	m    *buffer.Metrics

	wdb   *sql.DB   // the writing connection's pool (one connection)
	wconn *sql.Conn // owned by the committer goroutine
	rdb   *sql.DB   // reading connections, query_only
	read  *sql.Stmt // on rdb
	stmts writeStmts

	commits *buffer.Commits // set by Open once the state is loaded
	fill    *group          // the group being filled; guarded by the commits' lock

	// statMu guards the size bookkeeping, updated after each commit.
	statMu sync.Mutex
	first  uint64 // oldest offset held
	end    uint64 // offset after the newest record held
	stored int64  // Σ len(payload)+rowOverhead of the rows held
	cum    int64  // stored bytes appended since open, plus cumBase
	marks  []mark // ascending; marks[0].off == first

	cursorMu sync.Mutex
	cursors  map[string]uint64 // committed values; guarded by cursorMu

	removeMu sync.Mutex    // one Remove at a time
	hidden   buffer.Hidden // records removed, or being removed: readers pass over them

	// floor is the lowest offset a Remove in progress has hidden, or noFloor:
	// retention deletes only rows below it. floorMu is held by the committer
	// from the start of a commit until its first offset is published, and by
	// Remove to set floor, so that a Remove does not hide rows a commit that
	// had not yet seen the floor is deleting (remove.go).
	floorMu sync.Mutex
	floor   atomic.Uint64

	// beforeCommit, if set by a test, runs before each COMMIT; an error fails
	// the commit as a failed fsync would.
	beforeCommit func() error
}

// mark says that the records from off on were appended after cum stored bytes.
type mark struct {
	off uint64
	cum int64
}

// Open opens or creates the engine's database in o.Dir and starts the
// committer. It uses Dir, MaxBytes (default 1 GiB), MaxPendingBytes (default
// 32 MiB), Logger, Metrics (default: unregistered) and OnUnreadDeleted;
// SegmentBytes and FS do not apply, SQLite does its own file I/O.
func Open(o buffer.Options) (*Log, error) {
	o, err := withDefaults(o)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("sqlitelog: create dir: %w", err)
	}
	l := &Log{
		opts: o,
		dir:  o.Dir,
		path: filepath.Join(o.Dir, DBFile),
		log:  o.Logger,
		m:    o.Metrics,
		fill: newGroup(),
	}
	l.floor.Store(noFloor)
	if err := l.openDB(); err != nil {
		l.closeDB()
		return nil, err
	}
	l.commits = buffer.NewCommits(l.end, l.log, l.m, "sqlite buffer commit failed; no further appends will be acknowledged")
	l.fill.first = l.end
	l.marks = []mark{{off: l.first, cum: 0}}
	l.cum = l.stored
	l.m.Segments.Set(1)
	l.m.Bytes.Set(float64(l.fileBytes()))
	l.log.Info("sqlite buffer opened", "db", l.path, "first_offset", l.first, "next_offset", l.end,
		"stored_bytes", l.stored, "cursors", len(l.cursors), "took", time.Since(start).Round(time.Microsecond))
	go buffer.RunCommitter(l.commits, l.takeLocked, l.commitGroup)
	return l, nil
}

func withDefaults(o buffer.Options) (buffer.Options, error) {
	o = o.WithDefaults()
	switch {
	case o.Dir == "":
		return o, errors.New("sqlitelog: Dir is required")
	case strings.ContainsAny(o.Dir, "?#"):
		return o, fmt.Errorf("sqlitelog: Dir %q must not contain '?' or '#'", o.Dir)
	case o.MaxBytes < 0:
		return o, fmt.Errorf("sqlitelog: max_bytes %d is negative", o.MaxBytes)
	case o.MaxPendingBytes < buffer.MaxRecordSize:
		return o, fmt.Errorf("sqlitelog: max_pending_bytes %d is below one maximal record", o.MaxPendingBytes)
	}
	return o, nil
}

// openDB opens the connections, creates or checks the schema and loads the
// state, the first offset and the cursors.
func (l *Log) openDB() error {
	ctx := context.Background()
	var err error
	// The writer first: it switches a new database to WAL, which the readers
	// then find in the file.
	walPages := walCheckpointPages(l.opts.MaxBytes)
	l.wdb, err = sql.Open("sqlite", l.path+
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"+
		fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)&_pragma=journal_size_limit(%d)", walPages, 2*walPages*pageSize)+
		"&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("sqlitelog: open %s: %w", l.path, err)
	}
	l.wdb.SetMaxOpenConns(1)
	l.wconn, err = l.wdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlitelog: open %s: %w", l.path, err)
	}
	if err := l.initSchema(ctx); err != nil {
		return err
	}
	if err := l.loadState(ctx); err != nil {
		return err
	}
	if l.stmts, err = prepareWrite(ctx, l.wconn); err != nil {
		return fmt.Errorf("sqlitelog: prepare: %w", err)
	}

	l.rdb, err = sql.Open("sqlite", l.path+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)")
	if err != nil {
		return fmt.Errorf("sqlitelog: open %s: %w", l.path, err)
	}
	l.rdb.SetMaxIdleConns(4)
	l.rdb.SetConnMaxIdleTime(time.Minute)
	l.read, err = l.rdb.PrepareContext(ctx,
		`SELECT off, crc, payload FROM records WHERE off >= ? AND off < ? ORDER BY off LIMIT `+fmt.Sprint(readRows))
	if err != nil {
		return fmt.Errorf("sqlitelog: prepare read: %w", err)
	}
	return nil
}

// initSchema creates the schema in a new database, or checks that an existing
// one is a holdfast buffer of this format version.
func (l *Log) initSchema(ctx context.Context) error {
	var mode string
	if err := l.wconn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("sqlitelog: open %s: %w", l.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlitelog: %s: journal_mode is %s, not wal", l.path, mode)
	}
	var appID, version int64
	if err := l.wconn.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return fmt.Errorf("sqlitelog: open %s: %w", l.path, err)
	}
	if err := l.wconn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("sqlitelog: open %s: %w", l.path, err)
	}
	switch {
	case appID == applicationID && version == formatVersion:
		return nil
	case appID == applicationID:
		return fmt.Errorf("sqlitelog: %s: unsupported format version %d", l.path, version)
	case appID != 0 || version != 0:
		return fmt.Errorf("sqlitelog: %s is not a holdfast buffer (application_id %#x)", l.path, appID)
	}
	var tables int
	if err := l.wconn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables); err != nil {
		return fmt.Errorf("sqlitelog: open %s: %w", l.path, err)
	}
	if tables != 0 {
		return fmt.Errorf("sqlitelog: %s is not a holdfast buffer (foreign tables)", l.path)
	}
	tx, err := l.wconn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitelog: create schema: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	for _, q := range []string{schema,
		fmt.Sprintf("PRAGMA application_id = %d", applicationID),
		fmt.Sprintf("PRAGMA user_version = %d", formatVersion)} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("sqlitelog: create schema: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitelog: create schema: %w", err)
	}
	// The database file is new: make its directory entry durable (SQLite does
	// this itself only for the WAL).
	if err := syncDir(l.dir); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(l.dir)); err != nil {
		return err
	}
	l.log.Info("sqlite buffer created", "db", l.path)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sqlitelog: fsync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sqlitelog: fsync dir %s: %w", dir, err)
	}
	return nil
}

func (l *Log) loadState(ctx context.Context) error {
	var next, stored int64
	var minOff, maxOff sql.NullInt64
	err := l.wconn.QueryRowContext(ctx, `SELECT next_offset, bytes,
		(SELECT min(off) FROM records), (SELECT max(off) FROM records) FROM state WHERE id = 0`).
		Scan(&next, &stored, &minOff, &maxOff)
	if err != nil {
		return fmt.Errorf("sqlitelog: read state: %w", err)
	}
	l.end, l.stored = uint64(next), stored
	if maxOff.Valid && uint64(maxOff.Int64) >= l.end {
		// Cannot happen (state is written with every commit); keep offsets unique anyway.
		l.log.Warn("records beyond the stored next offset", "next_offset", l.end, "max_offset", maxOff.Int64)
		l.end = uint64(maxOff.Int64) + 1
	}
	l.first = l.end
	if minOff.Valid {
		l.first = uint64(minOff.Int64)
	}
	rows, err := l.wconn.QueryContext(ctx, "SELECT name, off FROM cursors")
	if err != nil {
		return fmt.Errorf("sqlitelog: read cursors: %w", err)
	}
	defer rows.Close()
	l.cursors = map[string]uint64{}
	for rows.Next() {
		var name string
		var off int64
		if err := rows.Scan(&name, &off); err != nil {
			return fmt.Errorf("sqlitelog: read cursors: %w", err)
		}
		l.cursors[name] = uint64(off)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlitelog: read cursors: %w", err)
	}
	return nil
}

// NextOffset returns the offset the next appended record will get.
func (l *Log) NextOffset() uint64 { return l.commits.NextOffset() }

// DurableOffset returns the offset below which every record is committed.
func (l *Log) DurableOffset() uint64 { return l.commits.DurableOffset() }

// FirstOffset returns the oldest offset still held (NextOffset when empty).
func (l *Log) FirstOffset() uint64 {
	l.statMu.Lock()
	defer l.statMu.Unlock()
	return l.first
}

// Err returns the error that put the engine in the failed state, or nil.
func (l *Log) Err() error { return l.commits.Err() }

// Stats returns the engine's size: Segments is always 1 (the database), Bytes
// the size of the database and WAL files.
func (l *Log) Stats() buffer.Stats {
	return buffer.Stats{
		Segments:    1,
		Bytes:       l.fileBytes(),
		FirstOffset: l.FirstOffset(),
		NextOffset:  l.DurableOffset(),
	}
}

func (l *Log) fileBytes() int64 {
	var n int64
	for _, p := range []string{l.path, l.path + "-wal"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// BytesFrom estimates the stored bytes (payload plus the per-row estimate) of
// the records from off to the durable end: exact at the marks recorded every
// 64 KiB since open, interpolated in between. Offsets already deleted count
// from the first one held. Rows Remove deleted are taken off the total and
// off every mark above them, so it stays exact at the marks.
func (l *Log) BytesFrom(off uint64) int64 {
	l.statMu.Lock()
	defer l.statMu.Unlock()
	end := l.end
	if off <= l.first {
		return l.stored
	}
	if off >= end {
		return 0
	}
	// The last mark at or below off (marks[0].off == first < off), and the
	// one after it or the durable end.
	j := sort.Search(len(l.marks), func(i int) bool { return l.marks[i].off > off })
	lo, hi := l.marks[j-1], mark{off: end, cum: l.cum}
	if j < len(l.marks) {
		hi = l.marks[j]
	}
	if lo.off == off || hi.off <= lo.off {
		return l.cum - lo.cum
	}
	at := lo.cum + int64(float64(hi.cum-lo.cum)*float64(off-lo.off)/float64(hi.off-lo.off))
	return l.cum - at
}

// Close waits for appends in flight to be committed, stops the committer and
// closes the database. Readers fail with buffer.ErrClosed afterwards.
func (l *Log) Close() error {
	if err := l.commits.Close(); err != nil {
		return err
	}
	return l.closeDB()
}

// closeDB closes the readers' connections, then the writer's: the last
// connection to close checkpoints the WAL into the database and removes it.
func (l *Log) closeDB() error {
	var errs []error
	if l.read != nil {
		errs = append(errs, l.read.Close())
	}
	if l.rdb != nil {
		errs = append(errs, l.rdb.Close())
	}
	errs = append(errs, l.stmts.close())
	if l.wconn != nil {
		errs = append(errs, l.wconn.Close())
	}
	if l.wdb != nil {
		errs = append(errs, l.wdb.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlitelog: close: %w", err)
	}
	return nil
}

var _ buffer.Engine = (*Log)(nil)
