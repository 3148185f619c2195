package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Sketch binary encoding, version 1. All integers are Go varints
// (encoding/binary), minimally encoded:
//
//	version   byte       1
//	accuracy  8 bytes    float64 bits, little-endian
//	zero      uvarint    count of the zero bucket
//	negative  store      buckets of |v| for negative values
//	positive  store      buckets of positive values
//
//	store:    uvarint k, the number of non-empty buckets, then k entries
//	          ascending by index:
//	  index   the first: varint (zig-zag) bucket index; later ones: uvarint
//	          gap to the previous index, ≥ 1
//	  count   uvarint ≥ 1
//
// The count of the sketch is the sum of all bucket counts and is not stored.
// The encoding of a sketch is canonical: equal contents give equal bytes, and
// UnmarshalBinary accepts exactly the bytes MarshalBinary can produce.
const sketchVersion = 1

// ErrCorruptSketch is returned by UnmarshalBinary for bytes that are not a
// sketch encoding.
var ErrCorruptSketch = errors.New("window: corrupt sketch encoding")

// MarshalBinary encodes the sketch compactly (about two bytes per non-empty
// bucket). It never fails.
func (s *Sketch) MarshalBinary() ([]byte, error) {
	return s.AppendBinary(make([]byte, 0, 16+4*int(s.pos.n+s.negs().n))), nil
}

// AppendBinary appends the encoding of MarshalBinary to dst.
func (s *Sketch) AppendBinary(dst []byte) []byte {
	dst = append(dst, sketchVersion)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(s.Accuracy()))
	dst = binary.AppendUvarint(dst, s.zero)
	dst = s.negs().appendBinary(dst)
	return s.pos.appendBinary(dst)
}

func (s *store) appendBinary(dst []byte) []byte {
	p := s.packed()
	k := 0
	p.each(s.n, func(int32, uint64) { k++ })
	dst = binary.AppendUvarint(dst, uint64(k))
	prev, first := int32(0), true
	p.each(s.n, func(j int32, c uint64) {
		i := s.off + j
		if first {
			dst = binary.AppendVarint(dst, int64(i))
			first = false
		} else {
			dst = binary.AppendUvarint(dst, uint64(i-prev))
		}
		prev = i
		dst = binary.AppendUvarint(dst, c)
	})
	return dst
}

// UnmarshalBinary replaces s with the sketch encoded in data. Any malformed,
// non-canonical or out-of-range input is rejected with an error wrapping
// ErrCorruptSketch; on error s is unchanged.
func (s *Sketch) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	if v := d.byte(); d.err == nil && v != sketchVersion {
		return fmt.Errorf("%w: unknown version %d", ErrCorruptSketch, v)
	}
	acc := math.Float64frombits(d.uint64())
	if d.err != nil {
		return d.err
	}
	m, err := newMapping(acc)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorruptSketch, err)
	}
	if acc == DefaultAccuracy {
		m = defaultMapping
	}
	out := Sketch{m: m}
	out.zero = d.uvarint()
	out.n = out.zero
	out.setNeg(d.store(m, &out.n))
	out.pos = d.store(m, &out.n)
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return d.err
	}
	*s = out
	return nil
}

// decoder reads the encoding; the first error sticks and later reads return
// zero values.
type decoder struct {
	b       []byte
	err     error
	corrupt error        // what errors wrap; nil means ErrCorruptSketch
	entries []storeEntry // scratch for store
}

type storeEntry struct {
	i int32
	c uint64
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		corrupt := d.corrupt
		if corrupt == nil {
			corrupt = ErrCorruptSketch
		}
		d.err = fmt.Errorf("%w: %s", corrupt, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	d.check(n)
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	d.check(n)
	return v
}

// check consumes a varint of n bytes as returned by binary.(U)varint.
func (d *decoder) check(n int) {
	switch {
	case n == 0:
		d.fail("truncated varint")
	case n < 0:
		d.fail("varint overflows 64 bits")
	case n > 1 && d.b[n-1] == 0:
		d.fail("varint not minimally encoded")
	default:
		d.b = d.b[n:]
	}
}

// store reads one store, adding its counts to *total.
func (d *decoder) store(m *mapping, total *uint64) store {
	k := d.uvarint()
	if d.err != nil || k == 0 {
		return store{}
	}
	if k > uint64(len(d.b))/2 { // every entry takes at least two bytes
		d.fail("%d buckets in %d bytes", k, len(d.b))
		return store{}
	}
	entries := d.entries[:0] // entries, not yet a store: the index range is unknown
	var prev int64
	for e := range k {
		var i int64
		if e == 0 {
			i = d.varint()
		} else {
			gap := d.uvarint()
			if gap == 0 || gap > uint64(m.maxIdx-m.minIdx) {
				d.fail("bucket index gap %d", gap)
			}
			i = prev + int64(gap)
		}
		c := d.uvarint()
		if d.err != nil {
			return store{}
		}
		if i < int64(m.minIdx) || i > int64(m.maxIdx) {
			d.fail("bucket index %d outside [%d, %d]", i, m.minIdx, m.maxIdx)
			return store{}
		}
		if c == 0 {
			d.fail("empty bucket %d", i)
			return store{}
		}
		if *total > math.MaxUint64-c {
			d.fail("count overflows uint64")
			return store{}
		}
		*total += c
		entries = append(entries, storeEntry{int32(i), c})
		prev = i
	}
	d.entries = entries
	lo, hi := entries[0].i, entries[len(entries)-1].i
	var s store
	var most uint64
	for _, e := range entries {
		most = max(most, e.c)
	}
	for most > laneMask[s.width] {
		s.width++
	}
	if n := hi - lo + 1; n <= smallCap(s.width) {
		s.repack(lo, smallCap(s.width), s.width, false)
	} else {
		s.repack(lo, n, s.width, true)
	}
	for _, e := range entries {
		s.inc(e.i-lo, e.c)
	}
	return s
}
