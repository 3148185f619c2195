// Package event defines the device event and its two codecs: JSON as devices send
// it (decoded and validated in json.go) and the binary record payload the buffer
// stores (this file, layout in docs/format/records.md).
//
// The package owns what record bytes mean; the buffer only frames and checksums
// them. Every decoder here reads bytes from outside and is fuzzed.
package event

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Record types: the first byte of every payload stored in the buffer.
const (
	TypeEvent byte = 0x01
)

const (
	flagID   = 1 << 0
	flagTags = 1 << 1
)

// Field length limits, shared by the JSON and binary codecs.
const (
	MaxNameLen     = 128 // device_id, stream, id
	MaxTags        = 32
	MaxTagKeyLen   = 64
	MaxTagValueLen = 256
)

// ErrCorrupt is returned when a binary payload does not follow the record format.
var ErrCorrupt = errors.New("event: corrupt record")

// ErrNonFinite is wrapped, along with ErrCorrupt, by the error for a payload
// holding a NaN or ±Inf where a finite number belongs: no encoder of this
// binary writes one, but window results of binaries before issue 11 could
// hold an infinite sum.
var ErrNonFinite = errors.New("non-finite number")

// ErrUnknownType is returned for a payload whose record type this binary does not
// know. Readers skip such records.
var ErrUnknownType = errors.New("event: unknown record type")

// Event is one measurement from one device.
type Event struct {
	DeviceID string
	Stream   string
	TS       int64 // event time, Unix milliseconds
	Value    float64
	ID       string            // optional, device-assigned, used to drop device retries
	Tags     map[string]string // optional
	Received int64             // Unix milliseconds when the node accepted the event
	// TSAssigned is true when the device sent no ts and the node set TS to
	// the time it parsed the event. It is not stored: a record does not say
	// which of the two its ts was. The store de-duplicates an id-less event
	// by its content only when the device gave the ts (docs/format/dedup.md).
	TSAssigned bool
}

// Time returns the event time.
func (e *Event) Time() time.Time { return time.UnixMilli(e.TS) }

// AppendBinary appends the record payload of e (type byte included) to dst.
func (e *Event) AppendBinary(dst []byte) []byte {
	var flags byte
	if e.ID != "" {
		flags |= flagID
	}
	if len(e.Tags) > 0 {
		flags |= flagTags
	}
	dst = append(dst, TypeEvent, flags)
	dst = binary.AppendVarint(dst, e.TS)
	dst = binary.AppendVarint(dst, e.Received)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(e.Value))
	dst = appendString(dst, e.DeviceID)
	dst = appendString(dst, e.Stream)
	if flags&flagID != 0 {
		dst = appendString(dst, e.ID)
	}
	if flags&flagTags != 0 {
		keys := make([]string, 0, len(e.Tags))
		for k := range e.Tags {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = binary.AppendUvarint(dst, uint64(len(keys)))
		for _, k := range keys {
			dst = appendString(dst, k)
			dst = appendString(dst, e.Tags[k])
		}
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// Type returns the record type of a payload, or 0 for an empty one.
func Type(payload []byte) byte {
	if len(payload) == 0 {
		return 0
	}
	return payload[0]
}

// DecodeBinary decodes an event record payload. It returns ErrUnknownType for a
// payload of another record type and an error wrapping ErrCorrupt for one that
// breaks the format.
func DecodeBinary(b []byte) (Event, error) {
	var e Event
	if len(b) == 0 {
		return e, fmt.Errorf("%w: empty payload", ErrCorrupt)
	}
	if b[0] != TypeEvent {
		return e, fmt.Errorf("%w 0x%02x", ErrUnknownType, b[0])
	}
	d := decoder{b: b[1:]}
	flags := d.byte()
	if flags&^(flagID|flagTags) != 0 {
		return e, fmt.Errorf("%w: unknown flags 0x%02x", ErrCorrupt, flags)
	}
	e.TS = d.varint()
	e.Received = d.varint()
	e.Value = math.Float64frombits(d.uint64())
	e.DeviceID = d.string(1, MaxNameLen)
	e.Stream = d.string(1, MaxNameLen)
	if flags&flagID != 0 {
		e.ID = d.string(1, MaxNameLen)
	}
	if flags&flagTags != 0 {
		n := d.uvarint()
		if n == 0 || n > MaxTags {
			d.fail("tag count out of range")
		}
		if d.err == nil {
			e.Tags = make(map[string]string, n)
			prev := ""
			for i := uint64(0); i < n && d.err == nil; i++ {
				k := d.string(0, MaxTagKeyLen)
				if i > 0 && k <= prev {
					d.fail("tag keys not ascending")
				}
				e.Tags[k] = d.string(0, MaxTagValueLen)
				prev = k
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err == nil && (math.IsNaN(e.Value) || math.IsInf(e.Value, 0)) {
		d.failNonFinite("value")
	}
	if d.err != nil {
		return Event{}, d.err
	}
	return e, nil
}

// decoder reads fields from a payload; the first failure sticks and later reads
// return zero values. It accepts only the encoding AppendBinary produces, so a
// decoded event re-encodes to the same bytes.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorrupt, msg)
	}
	d.b = nil
}

func (d *decoder) failNonFinite(field string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %w", ErrCorrupt, field, ErrNonFinite)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("short payload")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail("short payload")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 || n > 1 && d.b[n-1] == 0 { // error, or not the shortest encoding
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n > 1 && d.b[n-1] == 0 { // error, or not the shortest encoding
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(min, max int) string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n < uint64(min) || n > uint64(max) || n > uint64(len(d.b)) {
		d.fail("string length out of range")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
