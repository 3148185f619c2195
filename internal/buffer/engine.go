package buffer

import (
	"context"
	"strings"
)

// Engine is a durable buffer of opaque records, the contract every storage
// engine of holdfast keeps (buffer.engine: log, sqlite, pebble):
//
//   - Append stores records at consecutive offsets and returns the first; it
//     returns only once they are durable (fsync'd), so an acknowledgement
//     built on it survives a crash or a power cut. Offsets increase by one per
//     record and are never reused, also across restarts. An Append that fails
//     validation (ErrTooLarge) stores none of its records; one with no
//     records returns NextOffset at once. An empty engine has FirstOffset =
//     NextOffset.
//   - Readers return only offsets below DurableOffset, in offset order, from
//     any offset; records deleted by retention before a reader reaches them
//     are skipped.
//   - Cursors are named offsets saved atomically, all of a CommitCursors call
//     or none; retention counts records deleted before the slowest cursor
//     passed them (SlowestPosition: cursors named with ValuePrefix are values,
//     not positions).
//   - Retention deletes the oldest records once Stats.Bytes exceeds the
//     configured bytes, give or take the engine's unit of deletion (a
//     segment, a table file, a batch of rows).
//   - After a failed write or fsync (a full disk, an I/O error) the engine
//     acknowledges nothing more: Append fails and Err says why, until it is
//     opened again.
//
// The native log (*Log) is the reference; docs/format/log.md is its layout.
type Engine interface {
	Append(payloads ...[]byte) (first uint64, err error)
	NewReader(from uint64) RecordReader
	// NextOffset is the offset the next appended record gets;
	// DurableOffset the offset below which every record is durable;
	// FirstOffset the oldest offset still held.
	NextOffset() uint64
	DurableOffset() uint64
	FirstOffset() uint64
	// WaitDurable returns once DurableOffset ≥ off, or with ctx's error.
	WaitDurable(ctx context.Context, off uint64) error
	Cursor(name string) (uint64, bool)
	CommitCursor(name string, off uint64) error
	CommitCursors(c map[string]uint64) error
	Cursors() map[string]uint64
	Err() error
	Stats() Stats
	// BytesFrom estimates the stored bytes of the records from off on.
	BytesFrom(off uint64) int64
	Close() error
}

// RecordReader reads an Engine's records in offset order.
type RecordReader interface {
	// Next returns the next record; the payload is valid until the next
	// call. At the durable end it returns io.EOF, and later calls continue
	// with records appended since.
	Next() (off uint64, payload []byte, err error)
	// Position is the offset the reader looks for next.
	Position() uint64
	Close() error
}

var _ Engine = (*Log)(nil)

// ValuePrefix starts the names of cursors that hold a value saved atomically
// with the positions (a sink's stream sequence, say), not a reader's position:
// retention does not take them for readers.
const ValuePrefix = "="

// SlowestPosition returns the smallest reader position among cursors, leaving
// out values (names starting with ValuePrefix); ok is false if there is none.
func SlowestPosition(cursors map[string]uint64) (off uint64, ok bool) {
	for name, v := range cursors {
		if strings.HasPrefix(name, ValuePrefix) {
			continue
		}
		if !ok || v < off {
			off, ok = v, true
		}
	}
	return off, ok
}

// Evictor is implemented by engines that can delete their oldest records on
// demand, beyond retention by size: the buffer's pressure levels evict records
// every sink has confirmed. DeleteBefore deletes records below off, as many as
// the engine's unit of deletion allows (whole sealed segments for the log),
// and returns how many it deleted.
type Evictor interface {
	DeleteBefore(off uint64) (deleted uint64, err error)
}

var _ Evictor = (*Log)(nil)

// Keeper is implemented by engines whose retention keeps fewer record bytes
// than Options.MaxBytes, to leave room for their own files within it (the
// Pebble engine: WAL and tables not yet compacted). KeepBytes is the most
// retention keeps, counted as BytesFrom counts. The buffer's pressure levels
// measure against it; for other engines it is MaxBytes.
type Keeper interface {
	KeepBytes() int64
}
