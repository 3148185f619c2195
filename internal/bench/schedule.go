package bench

import (
	"context"
	"sync/atomic"
	"time"
)

// schedule hands out event sequence numbers, enforces the event count and, at a
// fixed rate, says when each event is due: event k at start + k/rate, whatever
// happened to the events before it. Measuring latency from that intended time
// rather than from the actual send keeps a slow ack from hiding the queueing
// it causes (coordinated omission).
type schedule struct {
	start      time.Time
	nsPerEvent float64 // 0: flat out, nothing is ever due later than now
	limit      int64   // total events; 0: no limit
	next       atomic.Int64
}

func newSchedule(start time.Time, rate float64, limit int64) *schedule {
	s := &schedule{start: start, limit: limit}
	if rate > 0 {
		s.nsPerEvent = 1e9 / rate
	}
	return s
}

// claim reserves up to n events. It returns the sequence number of the first
// and how many were granted: fewer than n near the limit, 0 past it.
func (s *schedule) claim(n int) (seq int64, got int) {
	seq = s.next.Add(int64(n)) - int64(n)
	if s.limit == 0 {
		return seq, n
	}
	if seq >= s.limit {
		return seq, 0
	}
	return seq, int(min(int64(n), s.limit-seq))
}

// claimed returns how many events have been granted so far.
func (s *schedule) claimed() int64 {
	n := s.next.Load()
	if s.limit > 0 {
		n = min(n, s.limit)
	}
	return n
}

// fixedRate reports whether events are due at set times.
func (s *schedule) fixedRate() bool { return s.nsPerEvent > 0 }

// due returns when event seq is due; at flat out, the zero time.
func (s *schedule) due(seq int64) time.Time {
	if s.nsPerEvent == 0 {
		return time.Time{}
	}
	return s.start.Add(time.Duration(float64(seq) * s.nsPerEvent))
}

// sleepUntil waits until t using timer, or until ctx is done; it reports
// whether t was reached.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		timer.Stop()
		return false
	}
}
