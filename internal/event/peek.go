package event

import (
	"encoding/binary"
	"math"
)

// View is an event record's fixed fields, read without allocating. The byte
// slices alias the payload.
type View struct {
	DeviceID []byte
	Stream   []byte
	ID       []byte // nil when absent
	TS       int64
	Received int64
	Value    float64
}

// Peek reads an event record's fields other than tags without allocating, for
// scans that filter before decoding. ok is false for other record types, for
// payloads Peek cannot read and for a non-finite value (which no encoder
// writes, and which would make window sums meaningless); DecodeBinary gives
// the reason.
func Peek(b []byte) (v View, ok bool) {
	if len(b) < 2 || b[0] != TypeEvent {
		return v, false
	}
	flags := b[1]
	d := decoder{b: b[2:]}
	v.TS = d.varint()
	v.Received = d.varint()
	v.Value = math.Float64frombits(d.uint64())
	v.DeviceID = d.bytes()
	v.Stream = d.bytes()
	if flags&flagID != 0 {
		v.ID = d.bytes()
	}
	return v, d.err == nil && v.Value-v.Value == 0 // NaN and ±Inf give NaN
}

// bytes reads a length-prefixed byte string without copying.
func (d *decoder) bytes() []byte {
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(len(d.b)-k) {
		d.fail("bad length")
		return nil
	}
	s := d.b[k : k+int(n)]
	d.b = d.b[k+int(n):]
	return s
}
