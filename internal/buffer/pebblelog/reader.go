package pebblelog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// Reader reads records in offset order, never past the durable offset. It is
// not safe for concurrent use; open one per goroutine.
type Reader struct {
	l      *Log
	from   uint64         // the offset looked for next
	mark   *atomic.Uint64 // SetMark
	buf    []byte         // payloads of recs
	recs   []span
	i      int // next entry of recs
	closed bool
	// to, if bounded, replaces the durable offset as the end: set on the
	// reader retention hands to OnUnreadDeleted.
	to      uint64
	bounded bool
}

type span struct {
	off        uint64
	start, end int
}

// NewReader returns a reader positioned at the first record with offset ≥
// from. Records deleted by retention are skipped: reading starts at the oldest
// offset still held. Records removed or being removed (Remove) are skipped too.
func (l *Log) NewReader(from uint64) buffer.RecordReader {
	return &Reader{l: l, from: from}
}

// Position returns the offset the reader looks for next.
func (r *Reader) Position() uint64 { return r.from }

// SetMark: see buffer.Marker.
func (r *Reader) SetMark(m *atomic.Uint64) { r.mark = m }

// Close releases the reader's buffer.
func (r *Reader) Close() error {
	r.closed = true
	r.buf, r.recs, r.i = nil, nil, 0
	return nil
}

// Next returns the next record. The payload is only valid until the next call.
// At the durable end it returns io.EOF; calling Next again later continues with
// records appended since.
//
// Records hidden by Remove, and records below the first offset, are passed
// over when Next is about to return them, not when they are copied: a record
// copied before it was hidden, or before retention or Remove deleted it, is
// never returned after.
func (r *Reader) Next() (uint64, []byte, error) {
	if r.closed {
		return 0, nil, errors.New("pebblelog: reader closed")
	}
	for {
		if r.i == len(r.recs) {
			if err := r.fill(); err != nil {
				return 0, nil, err
			}
			if len(r.recs) == 0 {
				return 0, nil, io.EOF
			}
		}
		s := r.recs[r.i]
		r.i++
		r.from = s.off + 1
		buffer.RaiseMark(r.mark, s.off)
		// Hidden first, the first offset second: retention and Remove move
		// the first offset before they forget the hidden offsets below it,
		// so an offset no longer hidden is seen below the first offset.
		if r.l.hidden.Skip(s.off) || s.off < r.l.first.Load() {
			continue
		}
		return s.off, r.buf[s.start:s.end], nil
	}
}

// fill copies the next records, from r.from up to the durable offset, into the
// reader's buffer with a short-lived iterator.
func (r *Reader) fill() error {
	r.buf, r.recs, r.i = r.buf[:0], r.recs[:0], 0
	durable := r.l.commits.DurableOffset()
	if r.bounded {
		durable = min(durable, r.to)
	}
	if r.from >= durable {
		return nil
	}
	l := r.l
	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbClosed {
		return buffer.ErrClosed
	}
	var lo, hi [9]byte
	it, err := l.db.NewIter(&pebble.IterOptions{
		LowerBound: recordKey(lo[:0], r.from),
		UpperBound: recordKey(hi[:0], durable),
	})
	if err != nil {
		return fmt.Errorf("pebblelog: read from %d: %w", r.from, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		v, err := it.ValueAndErr()
		if err == nil && len(k) != 9 {
			err = fmt.Errorf("bad record key %x", k)
		}
		if err != nil {
			it.Close()
			r.recs = r.recs[:0]
			return fmt.Errorf("pebblelog: read from %d: %w", r.from, err)
		}
		start := len(r.buf)
		r.buf = append(r.buf, v...)
		r.recs = append(r.recs, span{off: binary.BigEndian.Uint64(k[1:]), start: start, end: len(r.buf)})
		if len(r.buf) >= readChunk || len(r.recs) >= readRecords {
			break
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		r.recs = r.recs[:0]
		return fmt.Errorf("pebblelog: read from %d: %w", r.from, err)
	}
	if err := it.Close(); err != nil {
		r.recs = r.recs[:0]
		return fmt.Errorf("pebblelog: read from %d: %w", r.from, err)
	}
	return nil
}
