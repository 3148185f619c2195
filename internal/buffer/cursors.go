package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"slices"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

const (
	cursorsFile  = "cursors"
	cursorsMagic = "HFCR"
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

// CommitCursors moves several cursors forward in one atomic write: after a
// crash either all of them have their new values or none has.
func (l *Log) CommitCursors(c map[string]uint64) error {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	moved, err := MovedCursors(l.cursors, c)
	if err != nil || moved == nil {
		return err
	}
	next := maps.Clone(l.cursors)
	if next == nil {
		next = map[string]uint64{}
	}
	maps.Copy(next, moved)
	if len(next) > 0xffff {
		return fmt.Errorf("buffer: too many cursors (%d)", len(next))
	}
	if err := vfs.WriteAtomic(l.fs, l.path(cursorsFile), encodeCursors(next)); err != nil {
		return fmt.Errorf("write cursors: %w", err)
	}
	l.cursors = next
	return nil
}

// Cursors returns a copy of every cursor.
func (l *Log) Cursors() map[string]uint64 {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	return maps.Clone(l.cursors)
}

// slowestCursor returns the smallest cursor position, if any cursor exists.
func (l *Log) slowestCursor() (uint64, bool) {
	l.cursorMu.Lock()
	defer l.cursorMu.Unlock()
	return SlowestPosition(l.cursors)
}

func (l *Log) loadCursors() error {
	data, err := vfs.ReadFile(l.fs, l.path(cursorsFile))
	if errors.Is(err, fs.ErrNotExist) {
		l.cursors = map[string]uint64{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read cursors: %w", err)
	}
	c, err := decodeCursors(data)
	if err != nil {
		return fmt.Errorf("cursors file %s: %w", l.path(cursorsFile), err)
	}
	l.cursors = c
	return nil
}

func encodeCursors(c map[string]uint64) []byte {
	b := []byte(cursorsMagic)
	b = binary.LittleEndian.AppendUint16(b, formatVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(c)))
	for _, name := range slices.Sorted(maps.Keys(c)) {
		b = append(b, byte(len(name)))
		b = append(b, name...)
		b = binary.LittleEndian.AppendUint64(b, c[name])
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

var errBadCursors = errors.New("corrupt cursors file")

func decodeCursors(b []byte) (map[string]uint64, error) {
	if len(b) < 12 || string(b[:4]) != cursorsMagic {
		return nil, errBadCursors
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", errBadCursors)
	}
	if v := binary.LittleEndian.Uint16(body[4:]); v != formatVersion {
		return nil, fmt.Errorf("%w: unsupported version %d", errBadCursors, v)
	}
	n := int(binary.LittleEndian.Uint16(body[6:]))
	p := body[8:]
	c := make(map[string]uint64, n)
	for range n {
		if len(p) < 1 || len(p) < 1+int(p[0])+8 {
			return nil, fmt.Errorf("%w: truncated entry", errBadCursors)
		}
		k := int(p[0])
		c[string(p[1:1+k])] = binary.LittleEndian.Uint64(p[1+k:])
		p = p[1+k+8:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", errBadCursors)
	}
	return c, nil
}

// MovedCursors checks the cursor names of c (1 to 255 bytes, every engine's
// limit) and returns the cursors of c that move forward from current, nil if
// none does: cursors only move forward, a smaller offset is ignored.
func MovedCursors(current, c map[string]uint64) (map[string]uint64, error) {
	var moved map[string]uint64
	for name, off := range c {
		if len(name) == 0 || len(name) > 255 {
			return nil, fmt.Errorf("buffer: cursor name length %d out of range 1..255", len(name))
		}
		if cur, ok := current[name]; !ok || off > cur {
			if moved == nil {
				moved = make(map[string]uint64, len(c))
			}
			moved[name] = off
		}
	}
	return moved, nil
}
