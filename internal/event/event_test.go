package event

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBinaryRoundTrip(t *testing.T) {
	tags := map[string]string{}
	for i := range MaxTags {
		tags[strings.Repeat("k", 1+i)] = strings.Repeat("v", MaxTagValueLen-i)
	}
	for _, ev := range []Event{
		{DeviceID: "dev-000123", Stream: "temperature", TS: 1764190000000, Value: 21.53, Received: 1764190000123},
		{DeviceID: "d", Stream: "s", TS: 0, Value: 0},
		{DeviceID: "d", Stream: "s", TS: math.MinInt64, Received: math.MaxInt64, Value: -math.MaxFloat64, ID: "x"},
		{DeviceID: strings.Repeat("d", MaxNameLen), Stream: "é😀", TS: -1, Value: math.Copysign(0, -1),
			ID: strings.Repeat("i", MaxNameLen), Tags: map[string]string{"site": "north", "": ""}},
		{DeviceID: "d", Stream: "s", TS: 1, Value: math.SmallestNonzeroFloat64, Tags: tags},
	} {
		b := ev.AppendBinary([]byte("prefix"))
		require.Equal(t, "prefix", string(b[:6]))
		require.Equal(t, TypeEvent, Type(b[6:]))
		got, err := DecodeBinary(b[6:])
		require.NoError(t, err)
		requireSameEvent(t, ev, got)
		require.Equal(t, b[6:], got.AppendBinary(nil))
	}
}

func TestBinaryLayout(t *testing.T) {
	// docs/format/records.md: "Typical size ... 47 bytes"
	ev := Event{DeviceID: "dev-00000123", Stream: "temperature", TS: 1764190000000, Received: 1764190000123, Value: 21.5}
	b := ev.AppendBinary(nil)
	require.Len(t, b, 47)
	require.Equal(t, []byte{TypeEvent, 0}, b[:2])

	ev.ID, ev.Tags = "i", map[string]string{"b": "2", "a": "1"}
	b = ev.AppendBinary(nil)
	require.Equal(t, byte(flagID|flagTags), b[1])
	require.Equal(t, []byte{1, 'i', 2, 1, 'a', 1, '1', 1, 'b', 1, '2'}, b[len(b)-11:], "tags in key order")
}

func TestDecodeBinaryErrors(t *testing.T) {
	// rec builds a payload field by field.
	rec := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	str := func(s string) []byte { return appendString(nil, s) }
	head := func(flags byte) []byte { return []byte{TypeEvent, flags, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0} } // ts 1, received 1, value 0
	valid := rec(head(flagID|flagTags), str("d"), str("s"), str("i"), []byte{2}, str("a"), str("1"), str("b"), str("2"))
	_, err := DecodeBinary(valid)
	require.NoError(t, err)

	nan := rec([]byte{TypeEvent, 0, 2, 2}, binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.NaN())), str("d"), str("s"))
	inf := rec([]byte{TypeEvent, 0, 2, 2}, binary.LittleEndian.AppendUint64(nil, math.Float64bits(math.Inf(-1))), str("d"), str("s"))
	for name, b := range map[string][]byte{
		"empty":                     {},
		"unknown flags":             rec(head(0x04), str("d"), str("s")),
		"trailing bytes":            rec(head(0), str("d"), str("s"), []byte{0}),
		"NaN":                       nan,
		"infinity":                  inf,
		"empty device_id":           rec(head(0), str(""), str("s")),
		"empty stream":              rec(head(0), str("d"), str("")),
		"long device_id":            rec(head(0), str(strings.Repeat("d", MaxNameLen+1)), str("s")),
		"empty id flagged":          rec(head(flagID), str("d"), str("s"), str("")),
		"no tags flagged":           rec(head(flagTags), str("d"), str("s"), []byte{0}),
		"too many tags":             rec(head(flagTags), str("d"), str("s"), []byte{MaxTags + 1}),
		"tag keys unsorted":         rec(head(flagTags), str("d"), str("s"), []byte{2}, str("b"), str("1"), str("a"), str("2")),
		"tag key repeated":          rec(head(flagTags), str("d"), str("s"), []byte{2}, str("a"), str("1"), str("a"), str("2")),
		"long tag value":            rec(head(flagTags), str("d"), str("s"), []byte{1}, str("a"), str(strings.Repeat("v", MaxTagValueLen+1))),
		"string past end":           rec(head(0), str("d"), []byte{5, 's'}),
		"non-minimal varint":        rec([]byte{TypeEvent, 0, 0x82, 0x00, 2, 0, 0, 0, 0, 0, 0, 0, 0}, str("d"), str("s")),
		"non-minimal length":        rec(head(0), []byte{0x81, 0x00, 'd'}, str("s")),
		"varint overflow":           rec([]byte{TypeEvent, 0}, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}),
		"truncated in value":        valid[:8],
		"truncated in tags":         valid[:len(valid)-1],
		"truncated after type byte": valid[:1],
	} {
		ev, err := DecodeBinary(b)
		require.ErrorIs(t, err, ErrCorrupt, name)
		require.Equal(t, Event{}, ev, name)
	}
	for n := range len(valid) {
		_, err := DecodeBinary(valid[:n])
		require.ErrorIs(t, err, ErrCorrupt, "prefix of %d bytes", n)
	}

	_, err = DecodeBinary([]byte{0x02, 1, 2, 3})
	require.True(t, errors.Is(err, ErrUnknownType))
	require.EqualError(t, err, "event: unknown record type 0x02")
	require.Equal(t, byte(0), Type(nil))
}

// TestPeekRefusesNonFinite: a value that is not finite never reaches the
// windows, even from a record that was damaged past its checksum.
func TestPeekRefusesNonFinite(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		b := (&Event{DeviceID: "d", Stream: "s", Value: 1}).AppendBinary(nil)
		_, ok := Peek(b)
		require.True(t, ok)
		putFloat(b[4:], v) // type, flags, ts 0, received 0, then the value
		_, ok = Peek(b)
		require.False(t, ok, "value %v", v)
		_, err := DecodeBinary(b)
		require.ErrorIs(t, err, ErrCorrupt)
	}
	for _, v := range []float64{math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, math.Copysign(0, -1)} {
		got, ok := Peek((&Event{DeviceID: "d", Stream: "s", Value: v}).AppendBinary(nil))
		require.True(t, ok)
		require.Equal(t, math.Float64bits(v), math.Float64bits(got.Value))
	}
}
