package uplink

import (
	"context"
	"sync"
	"time"
)

// holdPoll is how long a syncer that holds records back waits, with nothing
// to send, before it looks again (at most ProbeInterval, so that a sink's
// probes keep their pace): new records wake it at once, and so does the end
// of aggregates-only; only the end of a sink's own holding (a metered link
// given up) is noticed at this pace.
const holdPoll = time.Second

// SetAggregatesOnly limits the sync to what a metered link carries
// (MeteredCarries: the critical lane, window results and alerts), whatever
// link the sink uses: the node's degradation level limited. The other
// records wait in the log as records a sink holds back do (Holder): each
// lane's cursor stays at its first record held, the records the syncer may
// send go ahead (Record.Ahead), and once it is off the lanes are read again
// from their cursors, so the held records follow in offset order and each
// record is sent once (a JetStream sink finds those sent ahead; the HTTP and
// MQTT sinks send them again, and their receivers dedup by offset). A batch
// already read when it is turned on still goes.
func (s *Syncer) SetAggregatesOnly(on bool) {
	if s.aggOnly.Swap(on) != on {
		s.wake()
	}
}

// AggregatesOnly reports whether the sync is limited to aggregates.
func (s *Syncer) AggregatesOnly() bool { return s.aggOnly.Load() }

// holds reports whether r must wait in the log for now: aggregates-only, or
// the sink holds it back.
func (s *Syncer) holds(r Record) bool {
	if s.aggOnly.Load() && !MeteredCarries(r) {
		return true
	}
	return s.holder != nil && s.holder.Holds(r)
}

// holding reports whether records may be held back now.
func (s *Syncer) holding() bool {
	return s.aggOnly.Load() || (s.holder != nil && s.holder.Holding())
}

// anyHeld reports whether a lane's reader has passed a record held back.
// Sync goroutine only.
func (s *Syncer) anyHeld() bool {
	for _, ls := range s.lanes {
		if ls.held {
			return true
		}
	}
	return false
}

// idleWait is how long the syncer waits for new records when it has nothing
// to send: MaxDelay, or, while it holds records back, holdPoll (at most
// ProbeInterval): a held record is read once, not looked at again every
// MaxDelay.
func (s *Syncer) idleWait() time.Duration {
	if !s.anyHeld() {
		return s.maxDelay()
	}
	return max(s.maxDelay(), min(holdPoll, s.opts.ProbeInterval))
}

// waker lets SetAggregatesOnly cut the syncer's idle wait short.
type waker struct {
	mu     sync.Mutex
	cancel context.CancelFunc // the idle wait under way; nil if none
	woken  bool               // woken with no wait under way: the next one ends at once
}

// wake ends the idle wait under way, or else the next one.
func (s *Syncer) wake() {
	s.waker.mu.Lock()
	defer s.waker.mu.Unlock()
	if s.waker.cancel != nil {
		s.waker.cancel()
	} else {
		s.waker.woken = true
	}
}

// waitContext returns the context of an idle wait of d: it ends after d or
// when the syncer is woken. done must be called once the wait is over.
func (s *Syncer) waitContext(ctx context.Context, d time.Duration) (wctx context.Context, done func()) {
	wctx, cancel := context.WithTimeout(ctx, d)
	s.waker.mu.Lock()
	s.waker.cancel = cancel
	if s.waker.woken {
		s.waker.woken = false
		cancel()
	}
	s.waker.mu.Unlock()
	return wctx, func() {
		s.waker.mu.Lock()
		s.waker.cancel = nil
		s.waker.mu.Unlock()
		cancel()
	}
}
