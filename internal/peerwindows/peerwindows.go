// Package peerwindows lets the two nodes of an active-active pair answer
// site-wide window queries: each serves its window partials (window.Partial)
// for a query over the pair's member link, core NATS request/reply, and
// merges the other node's into its own per window (Merge), so either answers
// the windows of both nodes' events exactly. docs/format/peer-windows.md
// has the wire format and the paging that keeps a merged page exact.
//
// A node's partials come from its open windows and from the window results
// in its log (Local). Nothing here keeps state between requests: when the
// other node is gone, a node answers from its own partials alone.
package peerwindows

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Query selects windows as GET /v1/windows does, and one page of them in the
// order of window.CompareKeys.
type Query struct {
	Stream   string        // "" every stream
	DeviceID string        // "" site-wide windows, "*" every device's and the site-wide ones
	Size     time.Duration // 0 every size
	From, To int64         // windows overlapping [From, To), Unix ms; math.MinInt64 and math.MaxInt64 for no bound
	After    *window.Key   // the last window of the previous page; nil for the first
	Limit    int           // 1 to MaxLimit
}

// MaxLimit is the largest page a Query asks for.
const MaxLimit = store.MaxLimit

// Page is one node's (or the merged site's) windows for a Query, in the order
// of window.CompareKeys, keys strictly ascending.
type Page struct {
	Partials []window.Partial
	// More says windows follow the last one of Partials.
	More bool
}

// Source gives a node's partials for a query: its first q.Limit windows
// after q.After (fewer only if none follow), open and closed, with More set
// if more follow.
type Source interface {
	Partials(ctx context.Context, q Query) (Page, error)
}

// Errors.
var (
	// ErrQuery is wrapped by the errors of a query that is not valid.
	ErrQuery = errors.New("peerwindows: bad query")
	// ErrPeer is wrapped by the errors the other node answered with, and by
	// replies that break the protocol.
	ErrPeer = errors.New("peerwindows: peer")
)

// Validate checks q.
func (q *Query) Validate() error {
	switch {
	case q.Limit < 1 || q.Limit > MaxLimit:
		return fmt.Errorf("%w: limit %d is not between 1 and %d", ErrQuery, q.Limit, MaxLimit)
	case q.Size < 0 || q.Size%time.Millisecond != 0:
		return fmt.Errorf("%w: size %v", ErrQuery, q.Size)
	}
	return nil
}

// matches reports whether the window k is one q selects, page aside.
func (q *Query) matches(k window.Key) bool {
	return (q.Stream == "" || k.Stream == q.Stream) &&
		(q.DeviceID == "*" || k.DeviceID == q.DeviceID) &&
		(q.Size == 0 || k.Size == q.Size) &&
		k.Start < q.To && k.End() > q.From
}

// Selects reports whether the window k belongs on one of q's pages after
// q.After: a Source's filter.
func (q *Query) Selects(k window.Key) bool { return q.matches(k) && q.after(k) }

// after reports whether k comes after q's page cursor.
func (q *Query) after(k window.Key) bool {
	return q.After == nil || window.CompareKeys(k, *q.After) > 0
}

// Local is a node's own Source: its closed windows from the window results
// in its log, its open ones from the processor. A window both closed in the
// log and open in the processor (while a restart replays the log) is taken
// from the log.
type Local struct {
	Store *store.Store
	// Open gives the partials of open windows (process.Processor.OpenPartials).
	Open func(stream, device string, size time.Duration, from, to int64) []window.Partial
}

// candidate is a window on its way to a page: a closed one still as its
// record, decoded only if it makes the page.
type candidate struct {
	key    window.Key
	closed *event.WindowRecord
	open   *window.Partial
}

// rank orders a window's candidates: its closed result before its open
// window.
func (c candidate) rank() int {
	if c.closed != nil {
		return 0
	}
	return 1
}

// Partials implements Source. It reads every closed window result matching
// q's filters from the log and keeps the first q.Limit after q.After.
// Results that cannot be merged (no sketch, which no binary writes) are left
// out.
func (l Local) Partials(ctx context.Context, q Query) (Page, error) {
	if err := q.Validate(); err != nil {
		return Page{}, err
	}
	var cands []candidate
	cutoff := int64(math.MinInt64) // a window ending before it cannot make the page
	// keep sorts, drops repeated windows (the log's newest record, or the log
	// over the processor) and all but the first q.Limit+1: one more tells
	// whether more follow.
	keep := func() {
		slices.SortStableFunc(cands, func(a, b candidate) int {
			return cmp.Or(window.CompareKeys(a.key, b.key), cmp.Compare(a.rank(), b.rank()))
		})
		cands = slices.CompactFunc(cands, func(a, b candidate) bool { return a.key == b.key })
		cands = cands[:min(len(cands), q.Limit+1)]
		if len(cands) == q.Limit+1 {
			cutoff = cands[q.Limit].key.End()
		}
	}
	wq := store.WindowQuery{Stream: q.Stream, DeviceID: q.DeviceID, Size: q.Size}
	if q.From != math.MinInt64 {
		wq.From = time.UnixMilli(q.From)
	}
	if q.To != math.MaxInt64 {
		wq.To = time.UnixMilli(q.To)
	}
	// Open windows first: one that closes meanwhile is then in the log or
	// still here, unless its result is on its way to the log.
	if l.Open != nil {
		open := l.Open(q.Stream, q.DeviceID, q.Size, q.From, q.To)
		for i := range open {
			if q.after(open[i].Key) {
				cands = append(cands, candidate{key: open[i].Key, open: &open[i]})
			}
		}
	}
	var err error
	if l.Store != nil {
		n := 0
		err = l.Store.EachWindow(wq, func(w store.StoredWindow) bool {
			if n++; n%1024 == 0 && ctx.Err() != nil {
				return false
			}
			// One stream's results are in the log in the order its windows
			// closed, by end: read from the newest, once a result ends
			// before the last window the page can hold, so do all older
			// ones.
			if q.Stream != "" && w.Start+w.SizeMS < cutoff {
				return false
			}
			k := window.Key{Stream: w.Stream, DeviceID: w.DeviceID, Size: time.Duration(w.SizeMS) * time.Millisecond, Start: w.Start}
			if !q.after(k) || len(w.Sketch) == 0 {
				return true
			}
			cands = append(cands, candidate{key: k, closed: &w.WindowRecord})
			if len(cands) > 2*q.Limit+1024 || q.Stream != "" && len(cands) >= 2*(q.Limit+1) {
				keep()
			}
			return true
		})
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return Page{}, err
	}
	keep()
	page := Page{More: len(cands) > q.Limit}
	cands = cands[:min(len(cands), q.Limit)]
	page.Partials = make([]window.Partial, 0, len(cands))
	for _, c := range cands {
		if c.open != nil {
			page.Partials = append(page.Partials, *c.open)
			continue
		}
		p, err := FromRecord(c.closed)
		if err != nil {
			return Page{}, fmt.Errorf("window %s: %w", c.closed.ID(), err)
		}
		page.Partials = append(page.Partials, p)
	}
	return page, nil
}

// FromRecord returns the partial of a closed window from its window result
// record. A record whose sum overflowed holds the sum saturated and the exact
// mean: the partial carries mean·count, exact to rounding.
func FromRecord(w *event.WindowRecord) (window.Partial, error) {
	p := window.Partial{
		Key:   window.Key{Stream: w.Stream, DeviceID: w.DeviceID, Size: time.Duration(w.SizeMS) * time.Millisecond, Start: w.Start},
		Final: true, Count: w.Count, Sum: w.Sum, Min: w.Min, Max: w.Max, Last: w.Last, LastTS: w.LastTS,
		Sketch: new(window.Sketch),
	}
	if w.Overflow {
		p.Sum, p.Over = window.SumOfMean(w.Count, w.OverflowMean)
	}
	if len(w.Sketch) == 0 {
		return p, errors.New("window result without a sketch")
	}
	if err := p.Sketch.UnmarshalBinary(w.Sketch); err != nil {
		return p, err
	}
	if p.Sketch.Count() != p.Count {
		return p, fmt.Errorf("window result of %d values with a sketch of %d", p.Count, p.Sketch.Count())
	}
	return p, nil
}

// Merge merges the pages several nodes gave for one query into the site's
// page: the partials of one window merged (window.Partial.Merge), the first
// limit windows. A page with More bounds the merge at its last window, past
// which that node's windows are unknown; then, or when windows are left
// beyond limit, the merged page has More. Pages are not changed.
func Merge(limit int, pages ...Page) (Page, error) {
	var bound *window.Key
	var out Page
	n := 0
	for i := range pages {
		ps := pages[i].Partials
		n += len(ps)
		if pages[i].More && len(ps) > 0 {
			if last := ps[len(ps)-1].Key; bound == nil || window.CompareKeys(last, *bound) < 0 {
				bound = &last
			}
		}
		out.More = out.More || pages[i].More
	}
	all := make([]window.Partial, 0, n)
	for _, pg := range pages {
		all = append(all, pg.Partials...)
	}
	slices.SortStableFunc(all, func(a, b window.Partial) int { return window.CompareKeys(a.Key, b.Key) })
	for i := 0; i < len(all); {
		p := all[i]
		p.Sketch = p.Sketch.Clone()
		j := i + 1
		for ; j < len(all) && all[j].Key == p.Key; j++ {
			if err := p.Merge(&all[j]); err != nil {
				return Page{}, err
			}
		}
		i = j
		if bound != nil && window.CompareKeys(p.Key, *bound) > 0 || len(out.Partials) == limit {
			out.More = true
			break
		}
		out.Partials = append(out.Partials, p)
	}
	return out, nil
}
