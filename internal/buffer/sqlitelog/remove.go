package sqlitelog

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

var _ buffer.Remover = (*Log)(nil)

// noFloor is Log.floor while no Remove has records hidden.
const noFloor = math.MaxUint64

// Remove deletes chosen records ahead of retention (buffer.Remover). Offsets
// below FirstOffset, at or above DurableOffset, hidden already or without a
// row (removed before) are passed over. The others are hidden, so that no
// reader returns them from then on; confirm says which must go; the rest are
// shown again. The confirmed rows are deleted in the committer's next
// transaction, and Remove returns once it is committed (synchronous=FULL).
// Confirmed records stay hidden afterwards: a reader may still hold them in
// the chunk it fetched before. One Remove runs at a time; appends, cursor
// commits and readers go on meanwhile.
//
// The DELETE runs on the committer goroutine, in the transaction of the next
// commit group (docs/format/sqlite.md, "Removing chosen records"), rather
// than in a transaction of Remove's own. The writing connection belongs to
// the committer, which keeps a transaction open on it for most of its
// working time; SQLite lets one connection write at a time, so a second
// writing connection would wait on the committer's transactions (busy_timeout)
// or make the committer's BEGIN IMMEDIATE wait, and sharing the committer's
// connection would need a lock around each of its commits. In the group's
// transaction the DELETE is ordered with that group's inserts, retention and
// state row; the stored-bytes counters it changes are updated by the code that
// updates them for the others, after the COMMIT; and it shares the group's
// fsync. Like any statement of that transaction, a failed DELETE fails the
// commit and puts the engine in the failed state.
//
// confirm runs with no lock of the engine held: it may append (the node
// writes its loss ledger there), and those appends are committed before the
// DELETE's transaction begins.
//
// Retention leaves the rows at and above the lowest hidden offset alone until
// Remove returns: its reader passes over hidden records, so a hidden row it
// deleted that confirm then did not choose would be lost without being
// reported to OnUnreadDeleted. The floor is set before the rows are hidden,
// under floorMu, which waits for a commit in progress (it may have read no
// floor) to publish its first offset; rows that commit deleted are dropped
// from the candidates, they were not hidden when retention reported them.
// The buffer may exceed MaxBytes meanwhile; the first commit after Remove
// returns catches up.
func (l *Log) Remove(offs []uint64, confirm func(hidden []uint64) []uint64) ([]uint64, error) {
	l.removeMu.Lock()
	defer l.removeMu.Unlock()
	if !slices.IsSorted(offs) {
		return nil, errors.New("sqlitelog: Remove needs ascending offsets")
	}
	err := l.commits.Usable()
	if err != nil {
		return nil, err
	}
	first, durable := l.FirstOffset(), l.DurableOffset()
	var want []uint64
	for _, off := range offs {
		if off < first || off >= durable || l.hidden.Has(off) || (len(want) > 0 && want[len(want)-1] == off) {
			continue
		}
		want = append(want, off)
	}
	if len(want) == 0 {
		return nil, nil
	}
	cand, err := l.held(want)
	if err != nil || len(cand) == 0 {
		return nil, err
	}

	l.floorMu.Lock()
	l.floor.Store(cand[0])
	l.floorMu.Unlock()
	defer l.floor.Store(noFloor)
	i, _ := slices.BinarySearch(cand, l.FirstOffset())
	if cand = cand[i:]; len(cand) == 0 {
		return nil, nil
	}
	keep := l.hidden.Decide(cand, confirm)
	if len(keep) == 0 {
		return nil, nil
	}

	var g *group
	err = l.commits.Add(func() *buffer.Ack {
		g = l.fill
		g.remove = keep // empty until now: Removes are serialised and each waits for its group
		return &g.Ack
	})
	if err != nil {
		// Failed or closed: keep stays hidden until the engine is opened
		// again. A failed commit was rolled back: nothing was deleted.
		return nil, err
	}
	return g.removed, nil
}

// held returns the offsets of want (ascending) that have a row, looked up
// by offset on a reading connection.
func (l *Log) held(want []uint64) ([]uint64, error) {
	ctx := context.Background()
	rows, err := l.rdb.QueryContext(ctx,
		"SELECT off FROM records WHERE off IN (SELECT value FROM json_each(?))", offsetsJSON(want))
	if err != nil {
		return nil, l.removeErr(err)
	}
	defer rows.Close()
	out := make([]uint64, 0, len(want))
	for rows.Next() {
		var off int64
		if err := rows.Scan(&off); err != nil {
			return nil, l.removeErr(err)
		}
		out = append(out, uint64(off))
	}
	if err := rows.Err(); err != nil {
		return nil, l.removeErr(err)
	}
	slices.Sort(out)
	return out, nil
}

func (l *Log) removeErr(err error) error {
	if l.commits.Closed() {
		return buffer.ErrClosed
	}
	return fmt.Errorf("sqlitelog: remove: %w", err)
}

// offsetsJSON encodes offs as a JSON array for json_each.
func offsetsJSON(offs []uint64) string {
	b := make([]byte, 0, 2+8*len(offs))
	b = append(b, '[')
	for i, off := range offs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, off, 10)
	}
	return string(append(b, ']'))
}

// removal is what the DELETE of a commit's confirmed records did.
type removal struct {
	rows  []removedRow // the rows it deleted, ascending
	gone  []uint64     // confirmed offsets retention had deleted meanwhile
	bytes int64        // Σ stored bytes of rows
	first uint64       // the new first offset if it deleted the first row, else 0
}

type removedRow struct {
	off   uint64
	bytes int64 // len(payload) + rowOverhead
}

// deleteRemoved deletes the rows of g.remove in tx. first is the oldest offset
// held before: confirmed offsets below it were deleted by retention since they
// were hidden (hidden, they were not reported to OnUnreadDeleted), so they
// count as removed. Only the committer goroutine calls it.
func (l *Log) deleteRemoved(ctx context.Context, tx *sql.Tx, g *group, first uint64) (removal, error) {
	var rm removal
	i, _ := slices.BinarySearch(g.remove, first)
	rm.gone = g.remove[:i]
	if i == len(g.remove) {
		return rm, nil
	}
	rows, err := tx.StmtContext(ctx, l.stmts.deleteChosen).QueryContext(ctx, offsetsJSON(g.remove[i:]))
	if err != nil {
		return rm, fmt.Errorf("remove records: %w", err)
	}
	for rows.Next() {
		var off, n int64
		if err := rows.Scan(&off, &n); err != nil {
			rows.Close()
			return rm, fmt.Errorf("remove records: %w", err)
		}
		rm.rows = append(rm.rows, removedRow{off: uint64(off), bytes: n + rowOverhead})
		rm.bytes += n + rowOverhead
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return rm, fmt.Errorf("remove records: %w", err)
	}
	slices.SortFunc(rm.rows, func(a, b removedRow) int { return cmp.Compare(a.off, b.off) })
	if len(rm.rows) > 0 && rm.rows[0].off == first {
		var oldest sql.NullInt64
		if err := tx.StmtContext(ctx, l.stmts.minOff).QueryRowContext(ctx).Scan(&oldest); err != nil {
			return rm, fmt.Errorf("remove records: oldest row: %w", err)
		}
		rm.first = g.next() // no row left: g has none either
		if oldest.Valid {
			rm.first = uint64(oldest.Int64)
		}
	}
	return rm, nil
}

// unaccountLocked takes the rows a Remove deleted out of the stored-bytes
// counters: stored and cum drop by their bytes, and so does every mark above
// a removed row. BytesFrom thus stays exact at the marks and drops, for every
// offset at or below a removed row, by exactly its bytes. Called with statMu
// held, after the commit.
func (l *Log) unaccountLocked(rm removal) {
	j := 0
	var below int64
	for i := range l.marks {
		for j < len(rm.rows) && rm.rows[j].off < l.marks[i].off {
			below += rm.rows[j].bytes
			j++
		}
		l.marks[i].cum -= below
	}
	l.stored -= rm.bytes
	l.cum -= rm.bytes
}

// removed hands the Remove waiting on g what it removed, after the commit.
func (l *Log) removed(g *group, rm removal) {
	g.removed = make([]uint64, 0, len(rm.gone)+len(rm.rows))
	g.removed = append(g.removed, rm.gone...)
	for _, r := range rm.rows {
		g.removed = append(g.removed, r.off)
	}
	l.m.RemovedRecords.Add(float64(len(rm.rows)))
	l.log.Info("removed chosen records", "records", len(rm.rows), "bytes", rm.bytes,
		"deleted_by_retention_before", len(rm.gone))
}
