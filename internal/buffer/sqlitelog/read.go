package sqlitelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// A reader fetches up to readRows rows, or readBytes of payload, per query.
const (
	readRows  = 1000
	readBytes = 1 << 20
)

// Reader reads records in offset order, never past the durable offset. It is
// not safe for concurrent use; open one per goroutine.
type Reader struct {
	l    *Log
	from uint64         // the offset looked for next
	mark *atomic.Uint64 // SetMark

	// stmt and to are set only on the reader retention hands to
	// OnUnreadDeleted: it reads with stmt, in the committing transaction, up
	// to to instead of the durable offset.
	stmt *sql.Stmt
	to   uint64

	// The chunk last fetched: rows[i] is at offs[i], its payload buf[ends[i-1]:ends[i]].
	offs []uint64
	crcs []uint32
	ends []int
	buf  []byte
	i    int
}

// NewReader returns a reader positioned at the first record with offset ≥ from.
// Records deleted by retention are skipped: reading starts at the oldest offset
// still held.
func (l *Log) NewReader(from uint64) buffer.RecordReader {
	return &Reader{l: l, from: from}
}

// Position returns the offset the reader looks for next.
func (r *Reader) Position() uint64 { return r.from }

// SetMark: see buffer.Marker.
func (r *Reader) SetMark(m *atomic.Uint64) { r.mark = m }

// Close releases the reader's buffer. The reader holds no connection between
// calls.
func (r *Reader) Close() error {
	r.offs, r.crcs, r.ends, r.buf, r.i = nil, nil, nil, nil, 0
	return nil
}

// Next returns the next record. The payload is only valid until the next call.
// At the durable end it returns io.EOF; calling Next again later continues
// with records committed since. A payload that does not match its checksum is
// returned as a *CorruptionError, again at every call. Records that Remove has
// hidden are passed over, also those of a chunk fetched before they were
// hidden.
func (r *Reader) Next() (uint64, []byte, error) {
	for {
		if r.i == len(r.offs) {
			if err := r.fetch(); err != nil {
				return 0, nil, err
			}
			if len(r.offs) == 0 {
				return 0, nil, io.EOF
			}
		}
		i := r.i
		off := r.offs[i]
		buffer.RaiseMark(r.mark, off)
		if r.l.hidden.Skip(off) {
			r.i++
			r.from = off + 1
			continue // removed, or being removed
		}
		start := 0
		if i > 0 {
			start = r.ends[i-1]
		}
		payload := r.buf[start:r.ends[i]]
		if withOffset(payloadCRC(payload), off) != r.crcs[i] {
			return 0, nil, &CorruptionError{Offset: off, Err: errors.New("checksum mismatch")}
		}
		r.i++
		r.from = off + 1
		return off, payload, nil
	}
}

// fetch reads the next chunk of durable rows from r.from on.
func (r *Reader) fetch() error {
	r.offs, r.crcs, r.ends, r.buf, r.i = r.offs[:0], r.crcs[:0], r.ends[:0], r.buf[:0], 0
	stmt, end := r.l.read, r.l.commits.DurableOffset()
	if r.stmt != nil {
		stmt, end = r.stmt, r.to
	}
	if r.from >= end {
		return nil
	}
	rows, err := stmt.QueryContext(context.Background(), int64(r.from), int64(end))
	if err != nil {
		return r.err(err)
	}
	defer rows.Close()
	for len(r.buf) < readBytes && rows.Next() {
		var off, crc int64
		var payload sql.RawBytes
		if err := rows.Scan(&off, &crc, &payload); err != nil {
			return r.err(err)
		}
		r.offs = append(r.offs, uint64(off))
		r.crcs = append(r.crcs, uint32(crc))
		r.buf = append(r.buf, payload...)
		r.ends = append(r.ends, len(r.buf))
	}
	if err := rows.Err(); err != nil {
		return r.err(err)
	}
	return nil
}

func (r *Reader) err(err error) error {
	r.offs, r.crcs, r.ends, r.buf = r.offs[:0], r.crcs[:0], r.ends[:0], r.buf[:0]
	if r.stmt == nil && r.l.commits.Closed() {
		return buffer.ErrClosed
	}
	return fmt.Errorf("sqlitelog: read from %d: %w", r.from, err)
}
