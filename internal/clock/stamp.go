package clock

import (
	"sync/atomic"
	"time"
)

// Stamper hands out received times, in Unix milliseconds, that never go
// below one it handed out before: after the wall clock jumps backwards, it
// repeats the highest time stamped until the wall clock passes it again.
// Safe for concurrent use.
type Stamper struct {
	now  func() time.Time
	last atomic.Int64 // the highest time stamped
}

// NewStamper returns a stamper reading now; nil reads time.Now.
func NewStamper(now func() time.Time) *Stamper {
	if now == nil {
		now = time.Now
	}
	return &Stamper{now: now}
}

// Stamp returns the wall clock in Unix milliseconds, or the highest time
// stamped before if that is later.
func (s *Stamper) Stamp() int64 {
	t := s.now().UnixMilli()
	for {
		last := s.last.Load()
		if t <= last {
			return last
		}
		if s.last.CompareAndSwap(last, t) {
			return t
		}
	}
}

// Held reports how far the wall clock is behind the highest time stamped: how
// long received times stay held after a backwards jump.
func (s *Stamper) Held() time.Duration {
	d := time.Duration(s.last.Load()-s.now().UnixMilli()) * time.Millisecond
	return max(d, 0)
}

// Raise makes ms, a received time stamped before (by an earlier run), the
// floor of the times stamped from now on.
func (s *Stamper) Raise(ms int64) {
	for {
		last := s.last.Load()
		if ms <= last || s.last.CompareAndSwap(last, ms) {
			return
		}
	}
}
