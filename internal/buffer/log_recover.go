package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

const quarantineDir = "quarantine"

// recover loads every segment, truncates a torn tail, quarantines damage, opens
// the active segment for appending and loads the cursors.
func (l *Log) recover() error {
	if err := l.fs.MkdirAll(l.dir); err != nil {
		return fmt.Errorf("create log dir: %w", err)
	}
	names, err := l.fs.List(l.dir)
	if err != nil {
		return fmt.Errorf("list log dir: %w", err)
	}
	var (
		bases []uint64
		seals []string
	)
	for _, n := range names {
		if strings.HasSuffix(n, ".seal.tmp") {
			if err := l.fs.Remove(l.path(n)); err != nil {
				return fmt.Errorf("remove unfinished seal %s: %w", n, err)
			}
			continue
		}
		if strings.HasSuffix(n, ".seal") {
			seals = append(seals, n)
			continue
		}
		if strings.HasSuffix(n, ".seg.tmp") {
			// A compaction that crashed before its rename: the segment
			// itself is intact.
			if err := l.fs.Remove(l.path(n)); err != nil {
				return fmt.Errorf("remove unfinished compaction %s: %w", n, err)
			}
			continue
		}
		if !strings.HasSuffix(n, ".seg") {
			continue
		}
		b, err := strconv.ParseUint(strings.TrimSuffix(n, ".seg"), 10, 64)
		if err != nil || segmentName(b) != n {
			l.log.Warn("ignoring unexpected file in log dir", "file", n)
			continue
		}
		bases = append(bases, b)
	}
	if err := l.loadCursors(); err != nil {
		return err
	}
	// A seal is kept only for a sealed segment: not for the last one, nor
	// for one retention deleted before its seal.
	sealed := map[string]bool{}
	for i := 0; i+1 < len(bases); i++ {
		sealed[sealName(bases[i])] = true
	}
	for _, n := range seals {
		if !sealed[n] {
			if err := l.fs.Remove(l.path(n)); err != nil {
				return fmt.Errorf("remove stale seal %s: %w", n, err)
			}
		}
	}
	if len(bases) == 0 {
		return l.startFresh(0)
	}
	var scanned []*segment // sealed segments read in full, to seal
	for i, base := range bases {
		last := i == len(bases)-1
		nextBase := uint64(0)
		if !last {
			nextBase = bases[i+1]
			seg, why := l.loadSealed(base, nextBase)
			if seg != nil {
				l.segments = append(l.segments, seg)
				continue
			}
			if !errors.Is(why, fs.ErrNotExist) {
				l.log.Warn("segment seal not used; scanning the segment", "segment", segmentName(base), "why", why)
			}
		}
		seg, err := l.loadSegment(base, last, nextBase)
		if err != nil {
			return err
		}
		if seg == nil { // an unusable last segment: a new one follows it
			return nil
		}
		seg.verified = true
		l.segments = append(l.segments, seg)
		if !last {
			scanned = append(scanned, seg)
		}
	}
	for _, seg := range scanned {
		l.writeSeal(seg)
	}
	last := l.segments[len(l.segments)-1]
	f, err := l.fs.OpenRW(l.path(last.name))
	if err != nil {
		return fmt.Errorf("open active segment %s: %w", last.name, err)
	}
	l.active = f
	return nil
}

// startFresh creates a new active segment with first offset base.
func (l *Log) startFresh(base uint64) error {
	name := segmentName(base)
	f, err := l.createSegment(name, base)
	if err != nil {
		return err
	}
	l.active = f
	l.segments = append(l.segments, &segment{base: base, name: name, next: base, size: segmentHeaderSize, verified: true})
	return nil
}

// loadSegment reads and checks one segment. For the last segment it truncates a
// torn tail. When the last segment's header is unusable it starts a new active
// segment past anything the file could have held, and returns nil.
func (l *Log) loadSegment(base uint64, last bool, nextBase uint64) (*segment, error) {
	name := segmentName(base)
	data, err := vfs.ReadFile(l.fs, l.path(name))
	if err != nil {
		return nil, fmt.Errorf("read segment %s: %w", name, err)
	}
	seg := &segment{base: base, name: name, next: base}
	if herr := checkHeader(data, base); herr != nil {
		if last && len(data) < segmentHeaderSize {
			// Crashed while creating it: nothing was ever acknowledged in it.
			l.log.Warn("rewriting incomplete segment header", "segment", name)
			if err := l.fs.Remove(l.path(name)); err != nil {
				return nil, fmt.Errorf("remove incomplete segment %s: %w", name, err)
			}
			return nil, l.startFresh(base)
		}
		l.quarantine(seg, 0, int64(len(data)), data, lostBetween(base, nextBase, len(data)), herr)
		if last {
			// Offsets the file may have held are never reused.
			return nil, l.startFresh(base + uint64(len(data)/frameHeaderSize) + 1)
		}
		seg.next = nextBase
		seg.size = int64(len(data))
		return seg, nil
	}

	// A compacted segment's offsets may skip, up to the next segment's base.
	var limit uint64
	compacted := binary.LittleEndian.Uint16(data[6:])&flagCompacted != 0
	seg.compacted = compacted
	if compacted {
		limit = nextBase
		if last {
			l.log.Warn("compacted segment is the last one; offsets continue after its last record", "segment", name)
			limit = ^uint64(0)
		}
	}
	res := scanFramesFrom(data, segmentHeaderSize, base, limit)
	seg.sparse = res.sparse
	pos := res.end
	exp := res.next
	for pos < int64(len(data)) {
		q, off, found := resync(data, pos+1, exp)
		if !found {
			break
		}
		l.quarantine(seg, pos, q, data[pos:q], off-exp, fmt.Errorf("invalid frame (expected offset %d)", exp))
		r := scanFramesFrom(data, q, off, limit)
		seg.sparse = append(seg.sparse, r.sparse...)
		pos, exp = r.end, r.next
	}
	if compacted && !last {
		exp = max(exp, nextBase)
	}
	seg.next = exp
	seg.size = pos
	if pos < int64(len(data)) {
		tail := data[pos:]
		if last {
			if err := l.truncateTorn(name, pos, len(tail)); err != nil {
				return nil, err
			}
		} else {
			l.quarantine(seg, pos, int64(len(data)), tail, lostBetween(exp, nextBase, 0),
				errors.New("invalid frame at end of sealed segment"))
			seg.size = int64(len(data))
			seg.next = max(exp, nextBase)
		}
	}
	return seg, nil
}

// lostBetween is the number of offsets missing between exp and the next segment's
// base; for a last segment (nextBase 0) it bounds the records n bytes could hold.
func lostBetween(exp, nextBase uint64, n int) uint64 {
	if nextBase > exp {
		return nextBase - exp
	}
	return uint64(n / frameHeaderSize)
}

func checkHeader(data []byte, base uint64) error {
	switch {
	case len(data) < segmentHeaderSize:
		return fmt.Errorf("short header (%d bytes)", len(data))
	case string(data[:4]) != segmentMagic:
		return fmt.Errorf("bad magic %q", data[:4])
	case binary.LittleEndian.Uint16(data[4:]) != formatVersion:
		return fmt.Errorf("unsupported version %d", binary.LittleEndian.Uint16(data[4:]))
	case binary.LittleEndian.Uint64(data[8:]) != base:
		return fmt.Errorf("header base %d does not match file name", binary.LittleEndian.Uint64(data[8:]))
	}
	return nil
}

type scanResult struct {
	end    int64  // position after the last valid frame
	next   uint64 // offset after the last valid frame
	sparse []indexEntry
}

// scanFramesFrom reads valid frames from pos, expecting offset exp first, and
// stops at the first invalid one. With limit 0 every frame's offset must be
// one more than the last (a segment as written); otherwise any offset from
// exp up to limit is valid (a compacted segment).
func scanFramesFrom(data []byte, pos int64, exp, limit uint64) scanResult {
	r := scanResult{end: pos, next: exp}
	last := int64(-sparseEvery)
	for {
		n, off, ok := frameAt(data, r.end)
		if !ok || off < r.next || (limit == 0 && off != r.next) || (limit != 0 && off >= limit) {
			return r
		}
		if r.end-last >= sparseEvery {
			r.sparse = append(r.sparse, indexEntry{off: off, pos: r.end})
			last = r.end
		}
		r.end += int64(frameHeaderSize + n)
		r.next = off + 1
	}
}

// frameAt decodes the frame header at pos and checks its CRC.
func frameAt(data []byte, pos int64) (n int, off uint64, ok bool) {
	if pos < 0 || int64(len(data))-pos < frameHeaderSize {
		return 0, 0, false
	}
	h := data[pos : pos+frameHeaderSize]
	n = int(binary.LittleEndian.Uint32(h))
	if n == 0 || n > MaxRecordSize || int64(len(data))-pos-frameHeaderSize < int64(n) {
		return 0, 0, false
	}
	payload := data[pos+frameHeaderSize : pos+frameHeaderSize+int64(n)]
	crc := crc32.Update(0, castagnoli, h[8:16])
	crc = crc32.Update(crc, castagnoli, payload)
	if crc != binary.LittleEndian.Uint32(h[4:]) {
		return 0, 0, false
	}
	return n, binary.LittleEndian.Uint64(h[8:]), true
}

// resync finds the first position at or after from holding a valid frame whose
// offset is at least exp.
func resync(data []byte, from int64, exp uint64) (pos int64, off uint64, found bool) {
	for p := from; int64(len(data))-p >= frameHeaderSize; p++ {
		// Cheap tests before the CRC: a plausible length and offset.
		n := binary.LittleEndian.Uint32(data[p:])
		o := binary.LittleEndian.Uint64(data[p+8:])
		if n == 0 || n > MaxRecordSize || o < exp || o-exp > uint64(len(data)) {
			continue
		}
		if _, off, ok := frameAt(data, p); ok {
			return p, off, true
		}
	}
	return 0, 0, false
}

// truncateTorn cuts the last segment back to its last valid frame and makes the
// cut durable.
func (l *Log) truncateTorn(name string, pos int64, n int) error {
	f, err := l.fs.OpenRW(l.path(name))
	if err != nil {
		return fmt.Errorf("open segment %s to truncate torn tail: %w", name, err)
	}
	defer f.Close()
	if err := f.Truncate(pos); err != nil {
		return fmt.Errorf("truncate torn tail of %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync truncated segment %s: %w", name, err)
	}
	l.m.TornBytes.Add(float64(n))
	l.log.Warn("truncated torn tail", "segment", name, "pos", pos, "bytes", n)
	return nil
}

// quarantine records a damaged range: it is copied aside, logged, counted and
// skipped by readers.
func (l *Log) quarantine(seg *segment, from, to int64, bad []byte, lost uint64, cause error) {
	cerr := &CorruptionError{Segment: seg.name, Pos: from, Err: cause}
	seg.bad = append(seg.bad, badRange{from: from, to: to})
	l.quarantined.Add(int64(lost))
	l.m.CorruptRecords.Add(float64(lost))
	l.m.CorruptBytes.Add(float64(to - from))
	qdir := filepath.Join(l.dir, quarantineDir)
	copyName := filepath.Join(qdir, fmt.Sprintf("%s-%d.bad", strings.TrimSuffix(seg.name, ".seg"), from))
	if err := l.fs.MkdirAll(qdir); err == nil {
		err = vfs.WriteAtomic(l.fs, copyName, bad)
		if err != nil {
			l.log.Error("could not copy corrupt range to quarantine", "file", copyName, "err", err)
		}
	}
	l.log.Error("quarantined corrupt log range", "err", cerr, "bytes", to-from, "records_lost", lost,
		"copy", copyName)
}
