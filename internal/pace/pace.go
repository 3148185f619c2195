// Package pace lets the node's background work give the CPU to the path that
// acknowledges events: the latency trigger's action, "prioritize the fast
// path: critical streams and acks first" (docs/OPERATIONS.md, Triggers).
//
// While a Pacer is on, the goroutines it paces (the processor's reader and
// workers, a syncer sending any lane but the critical one) share a budget of
// Share of one core's time: each charges the time its last unit of work took
// and waits while the budget is spent. The time charged is wall time: on a
// saturated machine a goroutine also waits for a core, and is charged for it. What they leave is the CPU the ingest
// handlers and the group commit need to answer devices sooner. Nothing is
// skipped: the background work falls behind and catches up once the Pacer is
// off (the processing lag and the sync lag show by how much). Acks, the group
// commit and the critical lane never wait on it.
//
// The budget is a token bucket of nanoseconds (golang.org/x/time/rate).
package pace

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Defaults: background work takes a tenth of one core while on, charged in
// slices of at most 2 ms.
const (
	DefaultShare = 0.10
	DefaultSlice = 2 * time.Millisecond
)

// maxCharge bounds what one unit of work is charged, in slices: a goroutine
// descheduled for long (on a loaded machine) does not owe a long rest.
const maxCharge = 4

// Pacer is shared by every goroutine it paces. Its methods are safe for
// concurrent use; a nil *Pacer never paces.
type Pacer struct {
	on     atomic.Bool
	share  float64
	slice  time.Duration
	budget *rate.Limiter // tokens are nanoseconds of work

	rested atomic.Int64  // nanoseconds waited for the budget, in total
	rests  atomic.Uint64 // waits, in total
}

// New returns a Pacer, off, that lets the goroutines it paces take share of
// one core's time together while on, charged in slices of at most slice.
// Zero values take the defaults; share is at most 1.
func New(share float64, slice time.Duration) *Pacer {
	if share <= 0 || share > 1 {
		share = DefaultShare
	}
	if slice <= 0 {
		slice = DefaultSlice
	}
	return &Pacer{share: share, slice: slice,
		budget: rate.NewLimiter(rate.Limit(share*float64(time.Second)), int(slice))}
}

// SetOn turns pacing on or off; it reports whether that changed anything.
func (p *Pacer) SetOn(on bool) bool { return p.on.Swap(on) != on }

// On says whether the Pacer paces.
func (p *Pacer) On() bool { return p != nil && p.on.Load() }

// Share is the share of one core the paced goroutines take while on.
func (p *Pacer) Share() float64 { return p.share }

// Rested is the time paced goroutines have waited for the budget in all,
// and how many waits that was.
func (p *Pacer) Rested() (time.Duration, uint64) {
	if p == nil {
		return 0, 0
	}
	return time.Duration(p.rested.Load()), p.rests.Load()
}

// Worker paces one goroutine. It is not safe for concurrent use.
type Worker struct {
	p     *Pacer
	since time.Time     // start of the work not yet counted; zero: waiting
	owed  time.Duration // work counted, not yet charged
}

// Worker returns the pacing of one goroutine; nil if p is nil.
func (p *Pacer) Worker() *Worker {
	if p == nil {
		return nil
	}
	return &Worker{p: p}
}

// Start says a unit of work begins now (after a wait for input, say).
func (w *Worker) Start() {
	if w != nil && w.p.on.Load() {
		w.since = time.Now()
	}
}

// Idle says the goroutine has run out of work and waits for more: the work
// until now counts, the waiting does not.
func (w *Worker) Idle() {
	if w == nil || w.since.IsZero() {
		return
	}
	w.owed += time.Since(w.since)
	w.since = time.Time{}
}

// Pace is called between units of work, as often as is cheap (one atomic
// load while off). While on, it counts the work since Start or the last
// Pace, and once a slice or more is owed charges it to the budget, waiting
// while the budget is spent. It returns false if ctx ended during the wait.
func (w *Worker) Pace(ctx context.Context) bool {
	if w == nil {
		return true
	}
	if !w.p.on.Load() {
		w.since, w.owed = time.Time{}, 0
		return true
	}
	now := time.Now()
	if !w.since.IsZero() {
		w.owed += now.Sub(w.since)
	}
	w.since = now
	if w.owed < w.p.slice {
		return true
	}
	charge := min(w.owed, maxCharge*w.p.slice)
	w.owed = 0
	for charge > 0 {
		n := min(charge, w.p.slice)
		if err := w.p.budget.WaitN(ctx, int(n)); err != nil {
			return false
		}
		charge -= n
	}
	after := time.Now()
	if waited := after.Sub(now); waited > 0 {
		w.p.rested.Add(int64(waited))
		w.p.rests.Add(1)
	}
	w.since = after
	return true
}
