package store

import (
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// Output is one record the processor writes: exactly one field is set.
type Output struct {
	Window    *event.WindowRecord
	Alert     *event.AlertRecord
	Watermark *event.WatermarkRecord
	Late      []uint64 // ascending offsets of late events
}

// AppendOutputs stores processor records durably, in order, and indexes them.
// It returns the offset of the first.
func (s *Store) AppendOutputs(outs []Output) (uint64, error) {
	if len(outs) == 0 {
		return 0, nil
	}
	payloads := make([][]byte, len(outs))
	for i, o := range outs {
		switch {
		case o.Window != nil:
			payloads[i] = o.Window.AppendBinary(nil)
		case o.Alert != nil:
			payloads[i] = o.Alert.AppendBinary(nil)
		case o.Watermark != nil:
			payloads[i] = o.Watermark.AppendBinary(nil)
		case len(o.Late) > 0:
			payloads[i] = event.AppendLate(nil, o.Late)
		default:
			return 0, fmt.Errorf("store: output %d is empty", i)
		}
	}
	s.appendMu.RLock()
	defer s.appendMu.RUnlock()
	first, err := s.log.Append(payloads...)
	if err != nil {
		return 0, err
	}
	if s.opts.OutputsOnly {
		return first, nil
	}
	for i, p := range payloads {
		s.indexOutput(p, first+uint64(i))
	}
	return first, nil
}

// indexOutput indexes a processor record found at off.
func (s *Store) indexOutput(p []byte, off uint64) {
	switch event.Type(p) {
	case event.TypeWindow:
		w, err := event.DecodeWindow(p)
		if err != nil && w.Stream == "" {
			return
		}
		// A record that does not decode (a non-finite sum from before issue
		// 11) is indexed by what could be read of it, its stream first, so
		// that a query for that stream meets it and counts it (skipped.go).
		s.idx.mu.Lock()
		extend(s.idx.byWindow, w.Stream, w.Start, off)
		s.idx.mu.Unlock()
	case event.TypeLate:
		offs, err := event.DecodeLate(p)
		if err != nil {
			return
		}
		s.lateMu.Lock()
		for _, o := range offs {
			s.late[o] = struct{}{}
		}
		s.lateMu.Unlock()
	}
}

// isLate reports whether the event at off was marked late.
func (s *Store) isLate(off uint64) bool {
	s.lateMu.RLock()
	defer s.lateMu.RUnlock()
	_, ok := s.late[off]
	return ok
}

// forget drops index entries below off, deleted by retention.
func (s *Store) forget(off uint64) {
	s.idx.forget(off)
	s.lateMu.Lock()
	for o := range s.late {
		if o < off {
			delete(s.late, o)
		}
	}
	s.lateMu.Unlock()
}

// WindowQuery selects stored window results. DeviceID "" selects site-wide
// windows, "*" every device's and the site-wide ones.
type WindowQuery struct {
	Stream   string // "" = every stream
	DeviceID string
	Size     time.Duration // 0 = every size
	From, To time.Time     // windows overlapping [From, To)
	Limit    int
	Before   uint64
}

// StoredWindow is a window result with its place in the log.
type StoredWindow struct {
	Offset uint64
	event.WindowRecord
}

// WindowPage is one page of window results, most recently closed first.
type WindowPage struct {
	Windows []StoredWindow
	Next    uint64
}

// maxWindowSize bounds how far before From a window overlapping it may start.
const maxWindowSize = 24 * time.Hour

// QueryWindows returns closed window results matching q, most recently closed first.
func (s *Store) QueryWindows(q WindowQuery) (WindowPage, error) {
	b := s.bounds(q.Limit, q.Before, q.From, q.To)
	windows, next, err := newestFirst(s.windowRanges(q.Stream, b), b.limit,
		func(rg [2]uint64) ([]StoredWindow, error) { return s.scanWindows(rg, q, b.fromTS, b.toTS) },
		func(w StoredWindow) uint64 { return w.Offset })
	return WindowPage{Windows: windows, Next: next}, err
}

// EachWindow calls f with every closed window result matching q's filters,
// most recently closed first, until f returns false; q's Limit and Before do
// not apply. Records that do not decode are skipped and counted, as in
// QueryWindows. It reads the same stretches of the log as QueryWindows.
func (s *Store) EachWindow(q WindowQuery, f func(StoredWindow) bool) error {
	b := s.bounds(0, 0, q.From, q.To)
	for _, rg := range s.windowRanges(q.Stream, b) {
		matched, err := s.scanWindows(rg, q, b.fromTS, b.toTS)
		if err != nil {
			return err
		}
		for i := len(matched) - 1; i >= 0; i-- {
			if !f(matched[i]) {
				return nil
			}
		}
	}
	return nil
}

// windowRanges returns the offset ranges, newest first, that may hold window
// results of the stream ("" every stream) within b.
func (s *Store) windowRanges(stream string, b bounds) [][2]uint64 {
	if stream == "" {
		return spans(b.lower, b.upper)
	}
	startFrom := b.fromTS
	if startFrom > math.MinInt64+maxWindowSize.Milliseconds() {
		startFrom -= maxWindowSize.Milliseconds()
	}
	runs, _ := s.idx.windowRuns(stream, startFrom, b.toTS)
	return disjoint(runs, b.lower, b.upper)
}

func (s *Store) scanWindows(rg [2]uint64, q WindowQuery, fromTS, toTS int64) ([]StoredWindow, error) {
	r := s.log.NewReader(rg[0])
	defer r.Close()
	var out []StoredWindow
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) || (err == nil && off >= rg[1]) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("query windows: %w", err)
		}
		if event.Type(p) != event.TypeWindow {
			continue
		}
		w, err := event.DecodeWindow(p)
		if err != nil {
			s.skip("windows", off, err)
			continue
		}
		if (q.Stream != "" && w.Stream != q.Stream) ||
			(q.DeviceID != "*" && w.DeviceID != q.DeviceID) ||
			(q.Size != 0 && w.SizeMS != q.Size.Milliseconds()) ||
			w.Start >= toTS || w.Start+w.SizeMS <= fromTS {
			continue
		}
		out = append(out, StoredWindow{Offset: off, WindowRecord: w})
	}
}

// disjoint turns index runs (newest first) into disjoint offset ranges within
// [lower, upper), newest first.
func disjoint(runs []run, lower, upper uint64) [][2]uint64 {
	var ranges [][2]uint64
	hiBound := upper
	for _, r := range runs {
		lo, hi := max(r.first, lower), min(r.last+1, hiBound)
		if lo < hi {
			ranges = append(ranges, [2]uint64{lo, hi})
		}
		hiBound = min(hiBound, r.first)
	}
	return ranges
}

// spans cuts [lower, upper) into runSpan-sized ranges, newest first.
func spans(lower, upper uint64) [][2]uint64 {
	var ranges [][2]uint64
	for hi := upper; hi > lower; {
		lo := max(lower, hi-min(hi, runSpan))
		ranges = append(ranges, [2]uint64{lo, hi})
		hi = lo
	}
	return ranges
}
