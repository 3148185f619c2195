package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// Seal files (docs/format/log.md, "Seal file"): what a scan of a sealed
// segment would find, so that opening the log reads only the active segment.
const (
	sealMagic      = "HFSL"
	sealVersion    = 1
	sealHeaderSize = 36
)

func sealName(base uint64) string { return fmt.Sprintf("%020d.seal", base) }

// sealInfo is the content of a seal file.
type sealInfo struct {
	flags  uint16
	base   uint64
	next   uint64
	size   int64
	sparse []indexEntry
}

func encodeSeal(si sealInfo) []byte {
	b := make([]byte, sealHeaderSize, sealHeaderSize+16*len(si.sparse)+4)
	copy(b, sealMagic)
	binary.LittleEndian.PutUint16(b[4:], sealVersion)
	binary.LittleEndian.PutUint16(b[6:], si.flags)
	binary.LittleEndian.PutUint64(b[8:], si.base)
	binary.LittleEndian.PutUint64(b[16:], si.next)
	binary.LittleEndian.PutUint64(b[24:], uint64(si.size))
	binary.LittleEndian.PutUint32(b[32:], uint32(len(si.sparse)))
	for _, e := range si.sparse {
		b = binary.LittleEndian.AppendUint64(b, e.off)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.pos))
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeSeal(b []byte) (sealInfo, error) {
	var si sealInfo
	switch {
	case len(b) < sealHeaderSize+4:
		return si, fmt.Errorf("short seal (%d bytes)", len(b))
	case crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]):
		return si, errors.New("seal checksum mismatch")
	case string(b[:4]) != sealMagic:
		return si, fmt.Errorf("bad seal magic %q", b[:4])
	case binary.LittleEndian.Uint16(b[4:]) != sealVersion:
		return si, fmt.Errorf("unsupported seal version %d", binary.LittleEndian.Uint16(b[4:]))
	}
	si.flags = binary.LittleEndian.Uint16(b[6:])
	si.base = binary.LittleEndian.Uint64(b[8:])
	si.next = binary.LittleEndian.Uint64(b[16:])
	si.size = int64(binary.LittleEndian.Uint64(b[24:]))
	n := int(binary.LittleEndian.Uint32(b[32:]))
	if len(b) != sealHeaderSize+16*n+4 {
		return si, fmt.Errorf("seal holds %d bytes for %d index entries", len(b), n)
	}
	si.sparse = make([]indexEntry, n)
	for i := range si.sparse {
		p := b[sealHeaderSize+16*i:]
		si.sparse[i] = indexEntry{off: binary.LittleEndian.Uint64(p), pos: int64(binary.LittleEndian.Uint64(p[8:]))}
	}
	return si, nil
}

// loadSealed returns the sealed segment at base as its seal describes it, or
// nil and why not when the seal is missing or does not match the segment
// file (the segment is then scanned). nextBase is the next segment's base.
func (l *Log) loadSealed(base, nextBase uint64) (*segment, error) {
	name := segmentName(base)
	b, err := vfs.ReadFile(l.fs, l.path(sealName(base)))
	if err != nil {
		return nil, err
	}
	si, err := decodeSeal(b)
	if err != nil {
		return nil, err
	}
	if si.base != base || si.next != nextBase || si.size < segmentHeaderSize {
		return nil, fmt.Errorf("seal says base %d, next %d, size %d; segment %s is followed by base %d",
			si.base, si.next, si.size, name, nextBase)
	}
	f, err := l.fs.Open(l.path(name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size != si.size {
		return nil, fmt.Errorf("segment %s holds %d bytes, its seal %d", name, size, si.size)
	}
	var h [segmentHeaderSize]byte
	if _, err := f.ReadAt(h[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := checkHeader(h[:], base); err != nil {
		return nil, err
	}
	flags := binary.LittleEndian.Uint16(h[6:])
	if flags != si.flags {
		return nil, fmt.Errorf("segment %s has flags %d, its seal %d", name, flags, si.flags)
	}
	return &segment{base: base, name: name, next: si.next, size: si.size, sparse: si.sparse,
		compacted: flags&flagCompacted != 0}, nil
}

// writeSeal writes seg's seal from its current state, unless damage was
// found in it or it has left the log. A seal that cannot be written is
// logged: the next open scans the segment instead.
func (l *Log) writeSeal(seg *segment) {
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	l.segMu.RLock()
	ok := len(seg.bad) == 0 && l.listedLocked(seg) && seg != l.segments[len(l.segments)-1]
	si := sealInfo{base: seg.base, next: seg.next, size: seg.size, sparse: append([]indexEntry(nil), seg.sparse...)}
	if seg.compacted {
		si.flags = flagCompacted
	}
	l.segMu.RUnlock()
	if !ok {
		return
	}
	if err := vfs.WriteAtomic(l.fs, l.path(sealName(seg.base)), encodeSeal(si)); err != nil {
		l.log.Warn("cannot write segment seal; the next open scans the segment", "segment", seg.name, "err", err)
	}
}

// removeSeal deletes base's seal, if there is one.
func (l *Log) removeSeal(base uint64) {
	if err := l.fs.Remove(l.path(sealName(base))); err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.log.Warn("cannot remove segment seal", "seal", sealName(base), "err", err)
	}
}

// verify scans a segment that was opened on its seal, the first time a
// reader (or a compaction) finds one of its frames invalid or needs all of
// them checked: damage is quarantined and counted as at open, the seal
// deleted, and the segment's generation raised so that readers position
// themselves again past the damage. It returns whether it scanned.
func (l *Log) verify(seg *segment) bool {
	l.verifyMu.Lock()
	defer l.verifyMu.Unlock()
	l.segMu.RLock()
	done, next := seg.verified, seg.next
	l.segMu.RUnlock()
	if done {
		return false
	}
	fresh, err := l.loadSegment(seg.base, false, next)
	l.segMu.Lock()
	seg.verified = true
	if err == nil && len(fresh.bad) > 0 {
		seg.sparse, seg.bad, seg.size, seg.next = fresh.sparse, fresh.bad, fresh.size, fresh.next
		seg.gen++
	}
	l.segMu.Unlock()
	if err != nil {
		l.log.Error("cannot scan sealed segment for damage", "segment", seg.name, "err", err)
		return true
	}
	if len(fresh.bad) > 0 {
		l.removeSeal(seg.base)
	}
	return true
}
