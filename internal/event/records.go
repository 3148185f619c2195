package event

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

// Processor record types (docs/format/records.md).
const (
	TypeWindow    byte = 0x02
	TypeAlert     byte = 0x03
	TypeWatermark byte = 0x04
	TypeLate      byte = 0x05
	// TypeHole stands in for a record the cloud did not hold when
	// `holdfast recover` rebuilt the log; it has no body and every reader
	// skips it.
	TypeHole byte = 0x06
)

// WindowRecord is a closed window's result as stored in the log. Every float
// is finite.
type WindowRecord struct {
	Stream        string
	DeviceID      string // "" for the site-wide window
	SizeMS        int64
	Start         int64 // Unix ms
	Count         uint64
	Sum, Min, Max float64
	// Overflow says the sum of the values lies beyond float64: Sum holds
	// ±math.MaxFloat64 and OverflowMean their mean.
	Overflow      bool
	OverflowMean  float64
	Last          float64
	LastTS        int64
	P50, P95, P99 float64
	Sketch        []byte
}

// Flags of a window result record.
const (
	windowSiteWide = 1 << 0
	windowOverflow = 1 << 1
)

// Mean returns the mean of the window's values: OverflowMean, or Sum / Count
// clamped to [Min, Max], as window.Result has it.
func (w *WindowRecord) Mean() float64 {
	if w.Overflow {
		return w.OverflowMean
	}
	return min(max(w.Sum/float64(w.Count), w.Min), w.Max)
}

// ID is the window's stable id: stream/device-or-*/size/start.
func (w *WindowRecord) ID() string { return WindowID(w.Stream, w.DeviceID, w.SizeMS, w.Start) }

// WindowID builds a window's stable id.
func WindowID(stream, device string, sizeMS, start int64) string {
	if device == "" {
		device = "*"
	}
	return stream + "/" + device + "/" + strconv.FormatInt(sizeMS, 10) + "/" + strconv.FormatInt(start, 10)
}

// AppendBinary appends the record payload.
func (w *WindowRecord) AppendBinary(dst []byte) []byte {
	var flags byte
	if w.DeviceID == "" {
		flags |= windowSiteWide
	}
	if w.Overflow {
		flags |= windowOverflow
	}
	dst = append(dst, TypeWindow, flags)
	dst = appendString(dst, w.Stream)
	if flags&windowSiteWide == 0 {
		dst = appendString(dst, w.DeviceID)
	}
	dst = binary.AppendUvarint(dst, uint64(w.SizeMS))
	dst = binary.AppendVarint(dst, w.Start)
	dst = binary.AppendUvarint(dst, w.Count)
	for _, f := range [...]float64{w.Sum, w.Min, w.Max, w.Last} {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	}
	dst = binary.AppendVarint(dst, w.LastTS)
	for _, f := range [...]float64{w.P50, w.P95, w.P99} {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	}
	if w.Overflow {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(w.OverflowMean))
	}
	dst = binary.AppendUvarint(dst, uint64(len(w.Sketch)))
	return append(dst, w.Sketch...)
}

// DecodeWindow decodes a window result payload.
func DecodeWindow(b []byte) (WindowRecord, error) {
	var w WindowRecord
	d, err := start(b, TypeWindow)
	if err != nil {
		return w, err
	}
	flags := d.byte()
	if flags&^(windowSiteWide|windowOverflow) != 0 {
		d.fail("unknown flags")
	}
	w.Stream = d.string(1, MaxNameLen)
	if flags&windowSiteWide == 0 {
		w.DeviceID = d.string(1, MaxNameLen)
	}
	size := d.uvarint()
	if size == 0 || size > math.MaxInt64 {
		d.fail("window size out of range")
	}
	w.SizeMS = int64(size)
	w.Start = d.varint()
	w.Count = d.uvarint()
	if d.err == nil && w.Count == 0 {
		d.fail("empty window")
	}
	w.Sum, w.Min, w.Max, w.Last = d.float(), d.float(), d.float(), d.float()
	w.LastTS = d.varint()
	w.P50, w.P95, w.P99 = d.float(), d.float(), d.float()
	if w.Overflow = flags&windowOverflow != 0; w.Overflow {
		w.OverflowMean = d.float()
		if d.err == nil && math.Abs(w.Sum) != math.MaxFloat64 {
			d.fail("overflow without a saturated sum")
		}
	}
	if n := d.uvarint(); d.err == nil {
		if n > uint64(len(d.b)) {
			d.fail("sketch length out of range")
		} else {
			w.Sketch = append([]byte(nil), d.b[:n]...)
			d.b = d.b[n:]
		}
	}
	return w, d.finish()
}

// AlertRecord is an alert state change as stored in the log.
type AlertRecord struct {
	Rule       string
	Severity   string // info, warning, critical
	Firing     bool   // false: resolved
	Stream     string
	DeviceID   string // "" for site-wide
	Value      float64
	Threshold  float64
	FiredAt    int64
	ResolvedAt int64
}

var severities = [...]string{1: "info", 2: "warning", 3: "critical"}

// ID is the alert's stable id, shared by its firing and resolved records.
func (a *AlertRecord) ID() string { return AlertID(a.Rule, a.DeviceID, a.FiredAt) }

// AlertID builds an alert's stable id: rule/device-or-*/fired_at.
func AlertID(rule, device string, firedAt int64) string {
	if device == "" {
		device = "*"
	}
	return rule + "/" + device + "/" + strconv.FormatInt(firedAt, 10)
}

// AppendBinary appends the record payload. An unknown severity is stored as warning.
func (a *AlertRecord) AppendBinary(dst []byte) []byte {
	state := byte(2)
	if a.Firing {
		state = 1
	}
	sev := byte(2)
	for i, s := range severities {
		if s != "" && s == a.Severity {
			sev = byte(i)
		}
	}
	dst = append(dst, TypeAlert, state, sev)
	dst = appendString(dst, a.Rule)
	dst = appendString(dst, a.Stream)
	dst = appendString(dst, a.DeviceID)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(a.Value))
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(a.Threshold))
	dst = binary.AppendVarint(dst, a.FiredAt)
	return binary.AppendVarint(dst, a.ResolvedAt)
}

// DecodeAlert decodes an alert payload.
func DecodeAlert(b []byte) (AlertRecord, error) {
	var a AlertRecord
	d, err := start(b, TypeAlert)
	if err != nil {
		return a, err
	}
	state, sev := d.byte(), d.byte()
	if d.err == nil && (state < 1 || state > 2) {
		d.fail("unknown alert state")
	}
	if d.err == nil && (sev < 1 || int(sev) >= len(severities)) {
		d.fail("unknown severity")
	}
	a.Firing = state == 1
	if d.err == nil {
		a.Severity = severities[sev]
	}
	a.Rule = d.string(1, MaxNameLen)
	a.Stream = d.string(1, MaxNameLen)
	a.DeviceID = d.string(0, MaxNameLen)
	a.Value, a.Threshold = d.float(), d.float()
	a.FiredAt = d.varint()
	a.ResolvedAt = d.varint()
	return a, d.finish()
}

// WatermarkRecord raises a stream's watermark where it stands in the log.
type WatermarkRecord struct {
	Stream    string
	Watermark int64
}

// AppendBinary appends the record payload.
func (w *WatermarkRecord) AppendBinary(dst []byte) []byte {
	dst = append(dst, TypeWatermark)
	dst = appendString(dst, w.Stream)
	return binary.AppendVarint(dst, w.Watermark)
}

// DecodeWatermark decodes a watermark advance payload.
func DecodeWatermark(b []byte) (WatermarkRecord, error) {
	var w WatermarkRecord
	d, err := start(b, TypeWatermark)
	if err != nil {
		return w, err
	}
	w.Stream = d.string(1, MaxNameLen)
	w.Watermark = d.varint()
	return w, d.finish()
}

// AppendLate appends a late-marks payload for ascending, distinct offsets.
func AppendLate(dst []byte, offsets []uint64) []byte {
	dst = append(dst, TypeLate)
	dst = binary.AppendUvarint(dst, uint64(len(offsets)))
	prev := uint64(0)
	for i, off := range offsets {
		if i == 0 {
			dst = binary.AppendUvarint(dst, off)
		} else {
			dst = binary.AppendUvarint(dst, off-prev)
		}
		prev = off
	}
	return dst
}

// DecodeLate decodes a late-marks payload.
func DecodeLate(b []byte) ([]uint64, error) {
	d, err := start(b, TypeLate)
	if err != nil {
		return nil, err
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > uint64(len(d.b))) {
		d.fail("late mark count out of range")
	}
	var offs []uint64
	if d.err == nil {
		offs = make([]uint64, 0, n)
	}
	prev := uint64(0)
	for i := uint64(0); i < n && d.err == nil; i++ {
		v := d.uvarint()
		if i > 0 {
			if v == 0 || v > math.MaxUint64-prev {
				d.fail("late offsets not ascending")
			}
			v += prev
		}
		offs = append(offs, v)
		prev = v
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return offs, nil
}

// start checks a payload's type and returns a decoder over the rest.
func start(b []byte, typ byte) (*decoder, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty payload", ErrCorrupt)
	}
	if b[0] != typ {
		return nil, fmt.Errorf("%w 0x%02x, want 0x%02x", ErrUnknownType, b[0], typ)
	}
	return &decoder{b: b[1:]}, nil
}

func (d *decoder) float() float64 {
	f := math.Float64frombits(d.uint64())
	if d.err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
		d.failNonFinite("number")
	}
	return f
}

// finish reports the first decoding error, or trailing bytes.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}
