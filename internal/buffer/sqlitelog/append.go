package sqlitelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// insertRows is how many rows one multi-row INSERT statement carries.
const insertRows = 32

// group is one commit group: records and cursor updates added while the
// previous group was being committed, made durable by one transaction.
type group struct {
	buffer.Ack
	payloads [][]byte // the appenders' slices; they wait until the commit ends
	crcs     []uint32
	first    uint64 // offset of payloads[0]
	bytes    int64  // Σ len(payload)
	cursors  map[string]uint64
	remove   []uint64 // offsets a Remove has confirmed, ascending (remove.go)
	removed  []uint64 // set once committed: the offsets of remove that are gone
}

func newGroup() *group { return &group{Ack: buffer.NewAck()} }

func (g *group) empty() bool {
	return len(g.payloads) == 0 && len(g.cursors) == 0 && len(g.remove) == 0
}

// next is the offset after the group's last record.
func (g *group) next() uint64 { return g.first + uint64(len(g.payloads)) }

// stored is the group's stored bytes as retention counts them.
func (g *group) stored() int64 { return g.bytes + rowOverhead*int64(len(g.payloads)) }

// Append adds payloads as consecutive records and returns the offset of the
// first, once the transaction holding them is committed (the WAL fsync'd). On
// error none of them may be treated as stored: the engine has failed or is
// closed. The payloads are not copied and must not change until it returns.
func (l *Log) Append(payloads ...[]byte) (uint64, error) {
	var stack [8]uint32
	crcs := stack[:0]
	if len(payloads) > len(stack) {
		crcs = make([]uint32, 0, len(payloads))
	}
	var n int64
	for _, p := range payloads {
		if len(p) == 0 || len(p) > buffer.MaxRecordSize {
			return 0, fmt.Errorf("%w: %d bytes", buffer.ErrTooLarge, len(p))
		}
		n += int64(len(p))
		crcs = append(crcs, payloadCRC(p))
	}
	full := func() bool { return l.fill.bytes > int64(l.opts.MaxPendingBytes) }
	return l.commits.Append(len(payloads), full, func(first uint64) *buffer.Ack {
		g := l.fill
		for i := range crcs {
			crcs[i] = withOffset(crcs[i], first+uint64(i))
		}
		g.payloads = append(g.payloads, payloads...)
		g.crcs = append(g.crcs, crcs...)
		g.bytes += n
		return &g.Ack
	})
}

// WaitDurable blocks until every offset below off is committed, the engine
// fails or is closed, or ctx ends.
func (l *Log) WaitDurable(ctx context.Context, off uint64) error {
	return l.commits.WaitDurable(ctx, off)
}

// commitGroup is what the single committer goroutine (buffer.RunCommitter,
// started by Open) does with each group: commit it, then acknowledge its
// appenders.
func (l *Log) commitGroup(g *group) {
	l.floorMu.Lock()
	res, rm, err := l.commit(g)
	l.commits.Lock()
	ackErr := l.commits.CommittedLocked(g.next(), err)
	l.commits.Unlock()
	if err == nil {
		l.committed(g, res, rm)
	}
	l.floorMu.Unlock()
	g.Finish(ackErr)
}

// takeLocked takes the group being filled, unless it is empty, and puts a new
// one in its place. The commits' lock must be held.
func (l *Log) takeLocked() (*group, bool) {
	g := l.fill
	if g.empty() {
		return nil, false
	}
	l.fill = newGroup()
	l.fill.first = g.next()
	return g, true
}

// retained is what a commit's retention deleted.
type retained struct {
	cut     uint64 // new first offset (the oldest row kept), 0 if nothing was deleted
	records uint64 // rows deleted
	bytes   int64
	unread  uint64 // rows deleted at or above the slowest cursor, hidden ones left out
}

// commit makes g durable in one transaction: its rows, its cursor updates,
// the removal a Remove waits for, retention and the state row. Only the
// committer goroutine calls it.
func (l *Log) commit(g *group) (res retained, rm removal, err error) {
	ctx := context.Background()
	tx, err := l.wconn.BeginTx(ctx, nil)
	if err != nil {
		return res, rm, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
				l.log.Warn("rollback after failed commit", "err", rerr)
			}
		}
	}()
	if err := l.insert(ctx, tx, g); err != nil {
		return res, rm, err
	}
	for _, name := range slices.Sorted(maps.Keys(g.cursors)) {
		off := g.cursors[name]
		if cur, ok := l.Cursor(name); ok && cur >= off {
			// An earlier group moved it further meanwhile.
			delete(g.cursors, name)
			continue
		}
		if _, err := tx.StmtContext(ctx, l.stmts.cursor).ExecContext(ctx, name, int64(off)); err != nil {
			return res, rm, fmt.Errorf("write cursor %q: %w", name, err)
		}
	}
	l.statMu.Lock()
	first, stored := l.first, l.stored
	l.statMu.Unlock()
	if len(g.remove) > 0 {
		// Before retention, so that retention counts the bytes the DELETE
		// freed and starts from the first row it left.
		if rm, err = l.deleteRemoved(ctx, tx, g, first); err != nil {
			return res, rm, err
		}
		stored -= rm.bytes
		if rm.first > 0 {
			first = rm.first
		}
	}
	stored += g.stored()
	// Retention deletes rows below g's and below the rows a Remove in
	// progress has hidden; it catches up at a later commit.
	if limit := min(g.first, l.floor.Load()); stored > l.opts.MaxBytes && first < limit {
		if res, err = l.retain(ctx, tx, g, limit, first, stored); err != nil {
			return res, rm, err
		}
		stored -= res.bytes
	}
	if _, err := tx.StmtContext(ctx, l.stmts.state).ExecContext(ctx, int64(g.next()), stored); err != nil {
		return res, rm, fmt.Errorf("write state: %w", err)
	}
	if l.beforeCommit != nil {
		if err := l.beforeCommit(); err != nil {
			return res, rm, err
		}
	}
	start := time.Now()
	if err := tx.Commit(); err != nil {
		return res, rm, fmt.Errorf("commit: %w", err)
	}
	l.m.FsyncSeconds.Observe(time.Since(start).Seconds())
	return res, rm, nil
}

// insert adds g's records, insertRows per statement.
func (l *Log) insert(ctx context.Context, tx *sql.Tx, g *group) error {
	args := make([]any, 0, 3*insertRows)
	many := tx.StmtContext(ctx, l.stmts.insertMany)
	one := tx.StmtContext(ctx, l.stmts.insertOne)
	for i := 0; i < len(g.payloads); {
		stmt, n := many, insertRows
		if len(g.payloads)-i < insertRows {
			stmt, n = one, 1
		}
		args = args[:0]
		for j := i; j < i+n; j++ {
			args = append(args, int64(g.first)+int64(j), int64(g.crcs[j]), g.payloads[j])
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("insert records from %d: %w", g.first+uint64(i), err)
		}
		i += n
	}
	return nil
}

// retain deletes the oldest rows below limit (g's first offset, or the floor
// of a Remove in progress if that is lower: rows a Remove has hidden stay until
// it is done) until at most MaxBytes minus a 1/64 slack is stored or no row
// below limit is left. Just before the DELETE it hands the rows at or above the
// slowest cursor (g's cursors included) to Options.OnUnreadDeleted, with a
// reader that queries them in tx and passes over hidden ones (records removed:
// they are not lost unread but removed); those rows are what RetentionUnread
// counts. Rows are counted one by one, not as a span of offsets: Remove may
// have left gaps.
func (l *Log) retain(ctx context.Context, tx *sql.Tx, g *group, limit, first uint64, stored int64) (retained, error) {
	var res retained
	need := stored - (l.opts.MaxBytes - l.opts.MaxBytes/64)
	slowest, cursors := l.slowestCursor(g.cursors)
	rows, err := tx.StmtContext(ctx, l.stmts.oldest).QueryContext(ctx, int64(first), int64(g.first))
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	kept := g.first // the oldest row left: the first one not deleted, or g's first
	for rows.Next() {
		var off, n int64
		if err := rows.Scan(&off, &n); err != nil {
			rows.Close()
			return res, fmt.Errorf("retention: %w", err)
		}
		if res.bytes >= need || uint64(off) >= limit {
			kept = uint64(off)
			break
		}
		res.records++
		res.bytes += n + rowOverhead
		if cursors && uint64(off) >= slowest && !l.hidden.Has(uint64(off)) {
			res.unread++
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	if res.records == 0 {
		return res, nil
	}
	res.cut = kept
	if res.unread > 0 && l.opts.OnUnreadDeleted != nil {
		// Before the DELETE, in the same transaction: the reader sees
		// exactly the rows about to go.
		from := max(slowest, first)
		r := &Reader{l: l, from: from, stmt: tx.StmtContext(ctx, l.stmts.read), to: res.cut}
		l.opts.OnUnreadDeleted(from, res.cut, r)
		r.Close()
	}
	if _, err := tx.StmtContext(ctx, l.stmts.deleteBelow).ExecContext(ctx, int64(res.cut)); err != nil {
		return res, fmt.Errorf("retention: delete below %d: %w", res.cut, err)
	}
	return res, nil
}

// committed updates the in-memory state after g's transaction committed.
func (l *Log) committed(g *group, res retained, rm removal) {
	n := uint64(len(g.payloads))
	if n > 0 {
		l.m.CommitRecords.Observe(float64(n))
		l.m.CommitBytes.Observe(float64(g.stored()))
		l.m.Records.Add(float64(n))
	}
	l.statMu.Lock()
	l.end = g.next()
	if len(rm.rows) > 0 {
		l.unaccountLocked(rm)
	}
	if n > 0 {
		if last := l.marks[len(l.marks)-1]; l.cum-last.cum >= markEvery {
			l.marks = append(l.marks, mark{off: g.first, cum: l.cum})
		}
		l.stored += g.stored()
		l.cum += g.stored()
	}
	cut := rm.first
	if res.cut > 0 {
		l.stored -= res.bytes
		cut = res.cut
	}
	if cut > 0 {
		l.first = cut
		// What lies below the cut is known exactly: it becomes the first mark.
		i := sort.Search(len(l.marks), func(i int) bool { return l.marks[i].off > cut })
		l.marks = l.marks[i-1:]
		l.marks[0] = mark{off: cut, cum: l.cum - l.stored}
	}
	l.statMu.Unlock()
	if cut > 0 {
		l.hidden.Forget(cut)
	}
	if len(g.remove) > 0 {
		l.removed(g, rm)
	}
	if res.cut > 0 {
		l.m.RetentionRecords.Add(float64(res.records))
		l.m.RetentionUnread.Add(float64(res.unread))
		l.log.Info("retention deleted records", "records", res.records, "unread", res.unread,
			"first_offset", res.cut)
	}
	if len(g.cursors) > 0 {
		l.cursorMu.Lock()
		for name, off := range g.cursors {
			if cur, ok := l.cursors[name]; !ok || off > cur {
				l.cursors[name] = off
			}
		}
		l.cursorMu.Unlock()
	}
	l.m.Bytes.Set(float64(l.fileBytes()))
}

// writeStmts are the writing connection's prepared statements.
type writeStmts struct {
	insertOne, insertMany, cursor, state, oldest, read, deleteBelow, deleteChosen, minOff *sql.Stmt
}

func prepareWrite(ctx context.Context, c *sql.Conn) (writeStmts, error) {
	var s writeStmts
	many := "INSERT INTO records (off, crc, payload) VALUES " +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?), ", insertRows), ", ")
	for _, p := range []struct {
		stmt **sql.Stmt
		q    string
	}{
		{&s.insertOne, "INSERT INTO records (off, crc, payload) VALUES (?, ?, ?)"},
		{&s.insertMany, many},
		{&s.cursor, "INSERT INTO cursors (name, off) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET off = excluded.off"},
		{&s.state, "UPDATE state SET next_offset = ?, bytes = ? WHERE id = 0"},
		{&s.oldest, "SELECT off, length(payload) FROM records WHERE off >= ? AND off < ? ORDER BY off"},
		{&s.read, "SELECT off, crc, payload FROM records WHERE off >= ? AND off < ? ORDER BY off LIMIT " + fmt.Sprint(readRows)},
		{&s.deleteBelow, "DELETE FROM records WHERE off < ?"},
		// Rowid lookups, one per element of the JSON array of offsets.
		{&s.deleteChosen, "DELETE FROM records WHERE off IN (SELECT value FROM json_each(?)) RETURNING off, length(payload)"},
		{&s.minOff, "SELECT min(off) FROM records"},
	} {
		var err error
		if *p.stmt, err = c.PrepareContext(ctx, p.q); err != nil {
			s.close()
			return writeStmts{}, err
		}
	}
	return s, nil
}

func (s writeStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{s.insertOne, s.insertMany, s.cursor, s.state, s.oldest, s.read, s.deleteBelow,
		s.deleteChosen, s.minOff} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}
