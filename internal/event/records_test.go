package event

import (
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

func FuzzDecodeProcessorRecords(f *testing.F) {
	w := WindowRecord{Stream: "s", DeviceID: "d", SizeMS: 1000, Count: 2, Sketch: []byte{9}}
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
		}
		if a, err := DecodeAlert(b); err == nil {
			require.Equal(t, b, a.AppendBinary(nil))
		}
		if wm, err := DecodeWatermark(b); err == nil {
			require.Equal(t, b, wm.AppendBinary(nil))
		}
		if offs, err := DecodeLate(b); err == nil {
			require.Equal(t, b, AppendLate(nil, offs))
		}
	})
}
