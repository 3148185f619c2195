// Package pace lets the node's background work give the CPU to the path that
// acknowledges events: the latency trigger's action, "prioritize the fast
// path: critical streams and acks first" (docs/OPERATIONS.md, Triggers).
//
// While a Pacer is on, each background goroutine (the processor's reader, a
// syncer sending any lane but the critical one) works in slices and rests
// between them, so that it takes at most Share of the wall time. What it
// leaves is the CPU the ingest handlers and the group commit need to answer
// devices sooner. Nothing is skipped: the background work falls behind and
// catches up once the Pacer is off (the processing lag and the sync lag show
// by how much). Acks, the group commit and the critical lane never wait on it.
//
// Written by hand, from the standard library only.
package pace

import (
	"context"
	"sync/atomic"
	"time"
)

// Defaults: a background goroutine works 2 ms, then rests 6 ms, while on.
const (
	DefaultShare = 0.25
	DefaultSlice = 2 * time.Millisecond
)

// Pacer is shared by every background goroutine it paces. Its methods are
// safe for concurrent use; a nil *Pacer never paces.
type Pacer struct {
	on    atomic.Bool
	share float64
	slice time.Duration

	rested atomic.Int64  // nanoseconds rested, in total
	rests  atomic.Uint64 // rests taken, in total
}

// New returns a Pacer, off, that lets background work take share (0–1) of
// the wall time in slices of slice while on. Zero values take the defaults.
func New(share float64, slice time.Duration) *Pacer {
	if share <= 0 || share > 1 {
		share = DefaultShare
	}
	if slice <= 0 {
		slice = DefaultSlice
	}
	return &Pacer{share: share, slice: slice}
}

// SetOn turns pacing on or off; it reports whether that changed anything.
func (p *Pacer) SetOn(on bool) bool { return p.on.Swap(on) != on }

// On says whether the Pacer paces.
func (p *Pacer) On() bool { return p != nil && p.on.Load() }

// Share is the share of the wall time background work takes while on.
func (p *Pacer) Share() float64 { return p.share }

// Rested is the time background goroutines have rested in all, and how
// many rests that was.
func (p *Pacer) Rested() (time.Duration, uint64) {
	if p == nil {
		return 0, 0
	}
	return time.Duration(p.rested.Load()), p.rests.Load()
}

// Worker paces one background goroutine. It is not safe for concurrent use.
type Worker struct {
	p     *Pacer
	since time.Time // start of the current slice; zero: none started
}

// Worker returns the pacing of one goroutine; nil if p is nil.
func (p *Pacer) Worker() *Worker {
	if p == nil {
		return nil
	}
	return &Worker{p: p}
}

// Idle says the goroutine has run out of work and waits for more: the
// waiting does not count as work.
func (w *Worker) Idle() {
	if w != nil {
		w.since = time.Time{}
	}
}

// Pace is called between units of background work, as often as is cheap
// (one atomic load while off). While on, once the goroutine has worked a
// slice it rests for slice × (1 − share) / share. It returns false if ctx
// ended during the rest.
func (w *Worker) Pace(ctx context.Context) bool {
	if w == nil || !w.p.on.Load() {
		if w != nil {
			w.since = time.Time{}
		}
		return true
	}
	now := time.Now()
	if w.since.IsZero() {
		w.since = now
		return true
	}
	worked := now.Sub(w.since)
	if worked < w.p.slice {
		return true
	}
	rest := time.Duration(float64(worked) * (1 - w.p.share) / w.p.share)
	// A slice far past its length (the goroutine was blocked, say) is not
	// repaid in one long rest.
	rest = min(rest, 4*time.Duration(float64(w.p.slice)*(1-w.p.share)/w.p.share))
	t := time.NewTimer(rest)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	w.p.rested.Add(int64(rest))
	w.p.rests.Add(1)
	w.since = time.Now()
	return true
}
