// Package clock reads time for the parts of the node that must not be fooled
// by a wall clock that jumps: an NTP step, an operator's `date -s`, a board
// without an RTC setting its clock late in boot.
//
// A Clock has two readings: the wall clock, which may jump, and a monotonic
// clock, which never does. From them the package builds what the node needs:
// a Stamper whose received times never go backwards, a Steady wall clock that
// advances at the monotonic clock's rate and ignores jumps, a Detector that
// finds jumps by comparing the two readings, and an Offset that holds the
// wall clock's estimated offset from the cloud's.
package clock

import (
	"context"
	"sync"
	"time"
)

// Clock reads the wall clock and a monotonic clock.
type Clock interface {
	// Now is the wall clock: it may jump either way.
	Now() time.Time
	// Mono is the time since an arbitrary origin fixed for the process: it
	// never jumps and never goes backwards.
	Mono() time.Duration
}

// System is the machine's clock.
var System Clock = system{}

// origin is System's monotonic origin: time.Since reads the monotonic
// reading time.Now carries.
var origin = time.Now()

type system struct{}

func (system) Now() time.Time      { return time.Now() }
func (system) Mono() time.Duration { return time.Since(origin) }

// Fake is a Clock for tests: Advance moves both readings, Jump the wall clock
// alone. Safe for concurrent use.
type Fake struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
}

// NewFake returns a fake clock whose wall clock reads wall.
func NewFake(wall time.Time) *Fake { return &Fake{wall: wall} }

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wall
}

func (f *Fake) Mono() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mono
}

// Advance lets d pass: both readings move by d.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.wall, f.mono = f.wall.Add(d), f.mono+d
	f.mu.Unlock()
}

// Jump steps the wall clock by d (negative: backwards); no time passes.
func (f *Fake) Jump(d time.Duration) {
	f.mu.Lock()
	f.wall = f.wall.Add(d)
	f.mu.Unlock()
}

// Steady is a wall clock that does not jump: it reads the wall clock as it
// was when the Steady was made, advanced by the monotonic time since. A jump
// of the wall clock afterwards does not move it; Rebase makes it take the
// wall clock's reading again.
type Steady struct {
	c  Clock
	mu sync.Mutex
	// wall and mono are the readings it is anchored at. Lock mu.
	wall time.Time
	mono time.Duration
}

// NewSteady returns a steady clock anchored at c's readings now.
func NewSteady(c Clock) *Steady {
	s := &Steady{c: c}
	s.Rebase()
	return s
}

// Now is the anchor's wall reading plus the monotonic time since.
func (s *Steady) Now() time.Time {
	m := s.c.Mono()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wall.Add(m - s.mono)
}

// Mono is the underlying clock's monotonic reading.
func (s *Steady) Mono() time.Duration { return s.c.Mono() }

// Rebase anchors the steady clock at the wall clock's reading now.
func (s *Steady) Rebase() {
	w, m := s.c.Now(), s.c.Mono()
	s.mu.Lock()
	s.wall, s.mono = w.Round(0), m
	s.mu.Unlock()
}

// Drift is how far the wall clock is ahead of the steady clock: the sum of
// the jumps since the anchor.
func (s *Steady) Drift() time.Duration { return s.c.Now().Round(0).Sub(s.Now()) }

// Sleep waits d on the monotonic clock and reports true, or returns false as
// soon as ctx ends (at once if it has ended and d is not positive).
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
