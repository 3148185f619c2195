package uplink

import (
	"context"
	"time"
)

// SetPaused pauses the syncer (on) or resumes it: while paused it sends
// nothing and holds its cursors, so that nothing is lost; on resuming it
// goes on from where it stopped. The node pauses cloud sync at the minimal
// and emergency degradation levels (internal/degrade).
func (s *Syncer) SetPaused(on bool) {
	if s.paused.Swap(on) != on && !on {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Paused reports whether the syncer is paused.
func (s *Syncer) Paused() bool { return s.paused.Load() }

// waitWhilePaused returns once the syncer is not paused or ctx is done; it
// reports whether it waited.
func (s *Syncer) waitWhilePaused(ctx context.Context) bool {
	if !s.paused.Load() {
		return false
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	s.standing.Store(true)
	defer s.standing.Store(false)
	for s.paused.Load() {
		select {
		case <-ctx.Done():
			return true
		case <-s.kick:
		case <-t.C:
		}
	}
	return true
}
