package pebblelog

import (
	"encoding/binary"
	"fmt"
	"maps"

	"github.com/cockroachdb/pebble/v2"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// Cursor returns the next offset the named reader has to process, and whether
// the cursor exists.
func (l *Log) Cursor(name string) (uint64, bool) {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	off, ok := l.cursors[name]
	return off, ok
}

// Cursors returns a copy of every cursor.
func (l *Log) Cursors() map[string]uint64 {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	return maps.Clone(l.cursors)
}

// CommitCursor durably records that the named reader has processed every record
// below off. Cursors only move forward; a smaller off is ignored.
func (l *Log) CommitCursor(name string, off uint64) error {
	return l.CommitCursors(map[string]uint64{name: off})
}

// CommitCursors moves several cursors forward in one batch committed with
// pebble.Sync: after a crash either all of them have their new values or none
// has. In the failed state it writes nothing and returns an error wrapping
// buffer.ErrFailed; after Close, buffer.ErrClosed.
func (l *Log) CommitCursors(c map[string]uint64) error {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	changed, err := buffer.MovedCursors(l.cursors, c)
	if err != nil || changed == nil {
		return err
	}
	if err := l.commits.Usable(); err != nil {
		return err
	}

	l.dbMu.RLock()
	defer l.dbMu.RUnlock()
	if l.dbClosed {
		return buffer.ErrClosed
	}
	b := l.db.NewBatch()
	var v [8]byte
	for name, off := range changed {
		binary.BigEndian.PutUint64(v[:], off)
		if err := b.Set(cursorKey(name), v[:], nil); err != nil {
			b.Close()
			return fmt.Errorf("pebblelog: write cursors: %w", err)
		}
	}
	if err := catchFatal(func() error { return b.Commit(pebble.Sync) }); err != nil {
		// Pebble's WAL is shared with the records: a failed sync here fails
		// the engine as a failed record commit would.
		err = fmt.Errorf("write cursors: %w", err)
		l.commits.Fail(err)
		return fmt.Errorf("%w: %v", buffer.ErrFailed, err)
	}
	_ = b.Close()
	maps.Copy(l.cursors, changed)
	return nil
}
