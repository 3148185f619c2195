package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"sync/atomic"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

const readChunk = 256 << 10

// Reader reads records in offset order, never past the last fsync'd one. It is
// not safe for concurrent use; open one per goroutine.
type Reader struct {
	l    *Log
	seg  *segment
	f    vfs.File
	pos  int64  // position in seg of the next frame
	gen  uint64 // seg.gen when f was opened
	from uint64
	mark *atomic.Uint64 // SetMark

	buf    []byte // bytes of seg from bufPos
	bufPos int64
	// bufTail: buf was filled from the log's tail in memory, whose frames
	// were checksummed as they were written.
	bufTail bool
}

// NewReader returns a reader positioned at the first record with offset ≥ from.
// Records deleted by retention are skipped: reading starts at the oldest offset
// still held.
func (l *Log) NewReader(from uint64) RecordReader {
	return &Reader{l: l, from: from}
}

// Position returns the offset the reader looks for next.
func (r *Reader) Position() uint64 { return r.from }

// SetMark: see Marker.
func (r *Reader) SetMark(m *atomic.Uint64) { r.mark = m }

// Close releases the reader's file.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Next returns the next record. The payload is only valid until the next call.
// At the end of the durable log it returns io.EOF; calling Next again later
// continues with records appended since. Damage found while reading (after the
// log was opened) is returned as a *CorruptionError.
func (r *Reader) Next() (uint64, []byte, error) {
	if r.seg == nil {
		if err := r.position(); err != nil {
			return 0, nil, err
		}
	}
	for {
		r.l.segMu.RLock()
		size, bad, gen := r.seg.size, r.seg.bad, r.seg.gen
		r.l.segMu.RUnlock()
		if gen != r.gen {
			// The segment was compacted: its file and positions changed.
			if err := r.position(); err != nil {
				return 0, nil, err
			}
			continue
		}
		for _, b := range bad {
			if r.pos >= b.from && r.pos < b.to {
				r.pos = b.to
			}
		}
		if r.pos >= size {
			if !r.advance() {
				return 0, nil, io.EOF
			}
			continue
		}
		off, payload, err := r.frame(size)
		if err != nil {
			var cerr *CorruptionError
			if errors.As(err, &cerr) && r.l.verify(r.seg) {
				// A segment opened on its seal, scanned now: if the damage
				// was quarantined, its generation changed and the reader
				// positions itself again, past it.
				continue
			}
			return 0, nil, err
		}
		if off < r.from {
			continue
		}
		r.from = off + 1
		RaiseMark(r.mark, off)
		if r.l.hidden.Skip(off) {
			continue // removed, or being removed
		}
		return off, payload, nil
	}
}

// frame decodes the frame at r.pos, reading more of the segment as needed.
func (r *Reader) frame(size int64) (uint64, []byte, error) {
	h, err := r.bytes(r.pos, frameHeaderSize, size)
	if err != nil {
		return 0, nil, err
	}
	n := int64(binary.LittleEndian.Uint32(h))
	crc := binary.LittleEndian.Uint32(h[4:])
	off := binary.LittleEndian.Uint64(h[8:])
	if n == 0 || n > MaxRecordSize || r.pos+frameHeaderSize+n > size {
		return 0, nil, r.corrupt(fmt.Errorf("frame length %d out of range", n))
	}
	rec, err := r.bytes(r.pos, int(frameHeaderSize+n), size)
	if err != nil {
		return 0, nil, err
	}
	payload := rec[frameHeaderSize:]
	if !r.bufTail && crc32.Update(crc32.Update(0, castagnoli, rec[8:16]), castagnoli, payload) != crc {
		return 0, nil, r.corrupt(errors.New("checksum mismatch"))
	}
	r.pos += frameHeaderSize + n
	return off, payload, nil
}

func (r *Reader) corrupt(err error) error {
	return &CorruptionError{Segment: r.seg.name, Pos: r.pos, Err: err}
}

// bytes returns n bytes of the current segment at pos, from the read buffer.
func (r *Reader) bytes(pos int64, n int, size int64) ([]byte, error) {
	if pos >= r.bufPos && pos+int64(n) <= r.bufPos+int64(len(r.buf)) {
		return r.buf[pos-r.bufPos : pos-r.bufPos+int64(n)], nil
	}
	want := max(n, readChunk)
	if rem := size - pos; int64(want) > rem {
		want = int(rem)
	}
	if cap(r.buf) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	if m := r.l.tail.read(r.seg, r.gen, pos, r.buf); m >= n {
		r.buf, r.bufPos, r.bufTail = r.buf[:m], pos, true
		r.l.m.TailReadBytes.Add(float64(m))
		return r.buf[:n], nil
	}
	r.bufTail = false
	m, err := r.f.ReadAt(r.buf, pos)
	if m < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		r.buf, r.bufPos = r.buf[:0], 0
		return nil, fmt.Errorf("read segment %s at %d: %w", r.seg.name, pos, err)
	}
	r.buf, r.bufPos = r.buf[:m], pos
	r.l.m.FileReadBytes.Add(float64(m))
	return r.buf[:n], nil
}

// position finds the segment and byte position of r.from.
func (r *Reader) position() error {
	l := r.l
	l.segMu.RLock()
	segs := l.segments
	i := sort.Search(len(segs), func(i int) bool { return segs[i].next > r.from })
	if i == len(segs) {
		i = len(segs) - 1
	}
	seg := segs[i]
	pos := int64(segmentHeaderSize)
	if j := sort.Search(len(seg.sparse), func(j int) bool { return seg.sparse[j].off > r.from }); j > 0 {
		pos = seg.sparse[j-1].pos
	}
	gen := seg.gen
	l.segMu.RUnlock()
	return r.open(seg, pos, gen)
}

// open opens seg's file at pos, which was found in generation gen of the
// segment. If the segment is compacted after that, Next sees the generation
// change and positions the reader again.
func (r *Reader) open(seg *segment, pos int64, gen uint64) error {
	f, err := r.l.fs.Open(r.l.path(seg.name))
	if err != nil {
		return fmt.Errorf("open segment %s: %w", seg.name, err)
	}
	if r.f != nil {
		r.f.Close()
	}
	r.f, r.seg, r.pos, r.gen = f, seg, pos, gen
	r.buf, r.bufPos = r.buf[:0], 0
	return nil
}

// advance moves to the segment after the current one, if there is one. It
// returns true without moving if the current segment grew meanwhile.
func (r *Reader) advance() bool {
	l := r.l
	l.segMu.RLock()
	if r.pos < r.seg.size {
		l.segMu.RUnlock()
		return true
	}
	var (
		nextSeg *segment
		gen     uint64
	)
	for _, s := range l.segments {
		if s.base >= r.seg.next && s != r.seg {
			nextSeg, gen = s, s.gen
			break
		}
	}
	l.segMu.RUnlock()
	if nextSeg == nil {
		return false
	}
	if err := r.open(nextSeg, segmentHeaderSize, gen); err != nil {
		// The segment may have just been deleted by retention; retry from scratch.
		r.seg = nil
		return r.position() == nil
	}
	return true
}
