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
	if q.Limit <= 0 {
		q.Limit = 100
	}
	q.Limit = min(q.Limit, MaxLimit)
	fromTS, toTS := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.From.IsZero() {
		fromTS = q.From.UnixMilli()
	}
	if !q.To.IsZero() {
		toTS = q.To.UnixMilli()
	}
	upper := s.log.DurableOffset()
	if q.Before != 0 {
		upper = min(upper, q.Before)
	}
	lower := s.log.FirstOffset()

	var ranges [][2]uint64 // [lo, hi), newest first, disjoint
	if q.DeviceID != "" || q.Stream != "" {
		runs, _ := s.idx.runs(q.DeviceID, q.Stream, fromTS, toTS)
		ranges = disjoint(runs, lower, upper)
	} else {
		ranges = spans(lower, upper)
	}

	var page Page
	for _, rg := range ranges {
		matched, err := s.scan(rg, q, fromTS, toTS)
		if err != nil {
			return Page{}, err
		}
		for i := len(matched) - 1; i >= 0; i-- {
			if len(page.Events) == q.Limit {
				page.Next = page.Events[len(page.Events)-1].Offset
				return page, nil
			}
			page.Events = append(page.Events, matched[i])
		}
	}
	return page, nil
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
		if !ok || v.TS < fromTS || v.TS >= toTS ||
			(q.DeviceID != "" && string(v.DeviceID) != q.DeviceID) ||
			(q.Stream != "" && string(v.Stream) != q.Stream) {
			continue
		}
		e, err := event.DecodeBinary(p)
		if err != nil {
			return nil, fmt.Errorf("query: record %d: %w", off, err)
		}
		out = append(out, Stored{Offset: off, Late: s.isLate(off), Event: e})
	}
}
