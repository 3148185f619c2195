package store

import (
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// Query selects stored events. Zero fields do not filter.
type Query struct {
	DeviceID string
	Stream   string
	From, To time.Time // event time, From inclusive, To exclusive
	Limit    int       // default 100, at most MaxLimit
	Before   uint64    // page cursor: only offsets below it; 0 = from the newest
}

// MaxLimit is the largest page a query returns.
const MaxLimit = 10_000

// Stored is an event with its place in the log.
type Stored struct {
	Offset uint64
	Late   bool // arrived after a window it belonged to had closed
	event.Event
}

// Page is one page of query results, newest (highest offset) first.
type Page struct {
	Events []Stored
	// Next is the Before of the following page, or 0 if this is the last one.
	Next uint64
}

// Query returns events matching q, most recently received first. Events come
// from the log; the index limits the reading to the stretches that hold the
// device's or stream's events in the time range.
func (s *Store) Query(q Query) (Page, error) {
	b := s.bounds(q.Limit, q.Before, q.From, q.To)
	var ranges [][2]uint64
	if q.DeviceID != "" || q.Stream != "" {
		runs, _ := s.idx.runs(q.DeviceID, q.Stream, b.fromTS, b.toTS)
		ranges = disjoint(runs, b.lower, b.upper)
	} else {
		ranges = spans(b.lower, b.upper)
	}
	events, next, err := newestFirst(ranges, b.limit,
		func(rg [2]uint64) ([]Stored, error) { return s.scan(rg, q, b.fromTS, b.toTS) },
		func(e Stored) uint64 { return e.Offset })
	return Page{Events: events, Next: next}, err
}

// bounds are a query's limits in log offsets and milliseconds.
type bounds struct {
	limit        int
	fromTS, toTS int64  // time filter, [fromTS, toTS)
	lower, upper uint64 // offsets to read, [lower, upper)
}

func (s *Store) bounds(limit int, before uint64, from, to time.Time) bounds {
	b := bounds{limit: limit, fromTS: math.MinInt64, toTS: math.MaxInt64}
	if b.limit <= 0 {
		b.limit = 100
	}
	b.limit = min(b.limit, MaxLimit)
	if !from.IsZero() {
		b.fromTS = from.UnixMilli()
	}
	if !to.IsZero() {
		b.toTS = to.UnixMilli()
	}
	b.upper = s.log.DurableOffset()
	if before != 0 {
		b.upper = min(b.upper, before)
	}
	b.lower = s.log.FirstOffset()
	return b
}

// newestFirst scans ranges (disjoint, newest first) and returns up to limit
// matches, highest offset first, and the cursor of the next page (0 if none).
func newestFirst[T any](ranges [][2]uint64, limit int, scan func([2]uint64) ([]T, error), offset func(T) uint64) ([]T, uint64, error) {
	var out []T
	for _, rg := range ranges {
		matched, err := scan(rg)
		if err != nil {
			return nil, 0, err
		}
		for i := len(matched) - 1; i >= 0; i-- {
			if len(out) == limit {
				return out, offset(out[len(out)-1]), nil
			}
			out = append(out, matched[i])
		}
	}
	return out, 0, nil
}

// scan reads [rg[0], rg[1]) and returns the matching events in offset order.
func (s *Store) scan(rg [2]uint64, q Query, fromTS, toTS int64) ([]Stored, error) {
	r := s.log.NewReader(rg[0])
	defer r.Close()
	var out []Stored
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("query: %w", err)
		}
		if off >= rg[1] {
			return out, nil
		}
		v, ok := event.Peek(p)
		if !ok {
			if event.Type(p) == event.TypeEvent {
				_, err := event.DecodeBinary(p)
				s.skip("events", off, err)
			}
			continue
		}
		if v.TS < fromTS || v.TS >= toTS ||
			(q.DeviceID != "" && string(v.DeviceID) != q.DeviceID) ||
			(q.Stream != "" && string(v.Stream) != q.Stream) {
			continue
		}
		e, err := event.DecodeBinary(p)
		if err != nil {
			s.skip("events", off, err)
			continue
		}
		out = append(out, Stored{Offset: off, Late: s.isLate(off), Event: e})
	}
}
