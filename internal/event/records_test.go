package event

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProcessorRecordsRoundTrip(t *testing.T) {
	w := WindowRecord{Stream: "temp", DeviceID: "d1", SizeMS: 60000, Start: 1764190020000, Count: 3,
		Sum: 6, Min: 1, Max: 3, Last: 2, LastTS: 1764190030000, P50: 2, P95: 3, P99: 3, Sketch: []byte{1, 2, 3}}
	got, err := DecodeWindow(w.AppendBinary(nil))
	require.NoError(t, err)
	require.Equal(t, w, got)
	require.Equal(t, "temp/d1/60000/1764190020000", got.ID())
	site := w
	site.DeviceID = ""
	site.Sketch = nil
	got, err = DecodeWindow(site.AppendBinary(nil))
	require.NoError(t, err)
	require.Equal(t, "temp/*/60000/1764190020000", got.ID())
	require.Empty(t, got.Sketch)

	for _, a := range []AlertRecord{
		{Rule: "hot", Severity: "critical", Firing: true, Stream: "temp", DeviceID: "d1", Value: 41, Threshold: 40, FiredAt: 5},
		{Rule: "hot", Severity: "info", Stream: "temp", Value: 39, Threshold: 40, FiredAt: 5, ResolvedAt: 9},
	} {
		got, err := DecodeAlert(a.AppendBinary(nil))
		require.NoError(t, err)
		require.Equal(t, a, got)
	}
	require.Equal(t, "hot/*/5", (&AlertRecord{Rule: "hot", FiredAt: 5}).ID())

	wm := WatermarkRecord{Stream: "temp", Watermark: -5}
	gotWM, err := DecodeWatermark(wm.AppendBinary(nil))
	require.NoError(t, err)
	require.Equal(t, wm, gotWM)

	offs := []uint64{7, 8, 100, 1 << 40}
	gotOffs, err := DecodeLate(AppendLate(nil, offs))
	require.NoError(t, err)
	require.Equal(t, offs, gotOffs)
}

func TestProcessorRecordsRejectDamage(t *testing.T) {
	w := WindowRecord{Stream: "s", SizeMS: 1000, Count: 1}
	b := w.AppendBinary(nil)
	_, err := DecodeWindow(b[:len(b)-1])
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = DecodeWindow(append(b, 0))
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = DecodeAlert(b)
	require.ErrorIs(t, err, ErrUnknownType)
	_, err = DecodeLate([]byte{TypeLate, 2, 5, 0})
	require.ErrorIs(t, err, ErrCorrupt, "a zero delta repeats an offset")
}

// TestWindowRecordOverflow: a window whose sum lies beyond float64 is stored
// with its sum saturated, flags bit 1 and its mean (docs/format/records.md);
// a record without the bit is what earlier binaries wrote.
func TestWindowRecordOverflow(t *testing.T) {
	w := WindowRecord{Stream: "huge", DeviceID: "big", SizeMS: 300000, Start: 0, Count: 2,
		Sum: math.MaxFloat64, Overflow: true, OverflowMean: 1.7e308, Min: 1.7e308, Max: 1.7e308, Last: 1.7e308,
		P50: 1.7e308, P95: 1.7e308, P99: 1.7e308, Sketch: []byte{1}}
	b := w.AppendBinary(nil)
	require.Equal(t, byte(windowOverflow), b[1])
	got, err := DecodeWindow(b)
	require.NoError(t, err)
	require.Equal(t, w, got)
	require.Equal(t, 1.7e308, got.Mean())

	w.Sum = -math.MaxFloat64
	got, err = DecodeWindow(w.AppendBinary(nil))
	require.NoError(t, err)
	require.Equal(t, w, got)

	w.Sum = 1e308
	_, err = DecodeWindow(w.AppendBinary(nil))
	require.ErrorIs(t, err, ErrCorrupt, "overflow without a saturated sum")
	w.Sum, w.OverflowMean = math.MaxFloat64, math.Inf(1)
	_, err = DecodeWindow(w.AppendBinary(nil))
	require.ErrorIs(t, err, ErrCorrupt, "a mean that is not finite")

	// A record of a binary from before the bit: the sum is the sum, and the
	// mean follows from it.
	old := []byte{TypeWindow, windowSiteWide, 1, 's', 0xd0, 0x0f, 0, 2}
	for _, f := range []float64{3, 1, 2, 2, 1, 2, 2} { // sum min max last; then last_ts 1; p50 p95 p99
		if len(old) == 8+4*8 {
			old = append(old, 2) // last_ts, varint 1
		}
		old = append(old, make([]byte, 8)...)
		putFloat(old[len(old)-8:], f)
	}
	old = append(old, 0) // no sketch
	got, err = DecodeWindow(old)
	require.NoError(t, err)
	require.False(t, got.Overflow)
	require.Equal(t, 1.5, got.Mean())
	require.Equal(t, old, got.AppendBinary(nil))
}

func putFloat(b []byte, f float64) {
	u := math.Float64bits(f)
	for i := range 8 {
		b[i] = byte(u >> (8 * i))
	}
}

func FuzzDecodeProcessorRecords(f *testing.F) {
	w := WindowRecord{Stream: "s", DeviceID: "d", SizeMS: 1000, Count: 2, Sketch: []byte{9}}
	huge := WindowRecord{Stream: "s", SizeMS: 1000, Count: 2, Sum: -math.MaxFloat64, Overflow: true,
		OverflowMean: -1.7e308, Min: -1.7e308, Max: -1.7e308, Last: -1.7e308, P50: -1.7e308, P95: -1.7e308, P99: -1.7e308}
	f.Add(huge.AppendBinary(nil))
	a := AlertRecord{Rule: "r", Severity: "warning", Stream: "s", FiredAt: 1}
	wm := WatermarkRecord{Stream: "s", Watermark: 3}
	f.Add(w.AppendBinary(nil))
	f.Add(a.AppendBinary(nil))
	f.Add(wm.AppendBinary(nil))
	f.Add(AppendLate(nil, []uint64{1, 2, 3}))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Whatever decodes re-encodes to the same bytes.
		if w, err := DecodeWindow(b); err == nil {
			require.Equal(t, b, w.AppendBinary(nil))
			for _, v := range []float64{w.Sum, w.Min, w.Max, w.Last, w.P50, w.P95, w.P99, w.Mean()} {
				require.False(t, math.IsInf(v, 0) || math.IsNaN(v), "%+v: mean %v", w, w.Mean())
			}
		}
		if a, err := DecodeAlert(b); err == nil {
			require.Equal(t, b, a.AppendBinary(nil))
			require.False(t, math.IsInf(a.Value, 0) || math.IsNaN(a.Value))
		}
		if wm, err := DecodeWatermark(b); err == nil {
			require.Equal(t, b, wm.AppendBinary(nil))
		}
		if offs, err := DecodeLate(b); err == nil {
			require.Equal(t, b, AppendLate(nil, offs))
		}
	})
}

// TestExtremeValuesThroughCodecs takes the values of issue 11 from device
// JSON to the log record and back, bit for bit: the ends of float64, values
// near overflow, subnormals and −0 are events like any other; only what is
// not a finite float64 is refused.
func TestExtremeValuesThroughCodecs(t *testing.T) {
	for _, s := range []string{"1.7e308", "-1.7e308", "1.7976931348623157e308", "-1.7976931348623157e308",
		"1e308", "8.9e307", "5e-324", "-5e-324", "2.2250738585072014e-308", "1e-310", "-0", "0"} {
		ev, err := ParseObject([]byte(`{"device_id":"big","stream":"huge","value":`+s+`}`), testNow, Limits{})
		require.NoError(t, err, s)
		var want float64
		require.NoError(t, json.Unmarshal([]byte(s), &want))
		require.Equal(t, math.Float64bits(want), math.Float64bits(ev.Value), s)
		b := ev.AppendBinary(nil)
		v, ok := Peek(b)
		require.True(t, ok, s)
		require.Equal(t, math.Float64bits(want), math.Float64bits(v.Value), s)
		back, err := DecodeBinary(b)
		require.NoError(t, err, s)
		require.Equal(t, math.Float64bits(want), math.Float64bits(back.Value), s)
		require.True(t, json.Valid(back.AppendJSON(nil)), s)
	}
	for _, s := range []string{"1.8e308", "-1e309", "1e999"} {
		_, err := ParseObject([]byte(`{"device_id":"big","stream":"huge","value":`+s+`}`), testNow, Limits{})
		require.Error(t, err, "%s is beyond float64", s)
	}
}
