package sqlitelog

import (
	"maps"

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

// CommitCursor durably records that the named reader has processed every record
// below off. Cursors only move forward; a smaller off is ignored.
func (l *Log) CommitCursor(name string, off uint64) error {
	return l.CommitCursors(map[string]uint64{name: off})
}

// CommitCursors moves several cursors forward in one transaction, the next
// commit group's: after a crash either all of them have their new values or
// none has. It returns once that transaction is committed.
func (l *Log) CommitCursors(c map[string]uint64) error {
	l.cursorMu.Lock()
	moved, err := buffer.MovedCursors(l.cursors, c)
	l.cursorMu.Unlock()
	if err != nil || moved == nil {
		return err
	}
	return l.commits.Add(func() *buffer.Ack {
		g := l.fill
		if g.cursors == nil {
			g.cursors = moved
		} else {
			for name, off := range moved {
				if cur, ok := g.cursors[name]; !ok || off > cur {
					g.cursors[name] = off
				}
			}
		}
		return &g.Ack
	})
}

// Cursors returns a copy of every cursor.
func (l *Log) Cursors() map[string]uint64 {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	return maps.Clone(l.cursors)
}

// slowestCursor returns the smallest cursor position, counting the committed
// cursors and those of pending, if any cursor exists.
func (l *Log) slowestCursor(pending map[string]uint64) (uint64, bool) {
	l.cursorMu.Lock()
	all := maps.Clone(l.cursors)
	l.cursorMu.Unlock()
	for name, off := range pending {
		if cur, ok := all[name]; !ok || off > cur {
			all[name] = off
		}
	}
	return buffer.SlowestPosition(all)
}
