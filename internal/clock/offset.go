package clock

import (
	"sync"
	"time"
)

// Sample is one measurement of the node's wall clock against the cloud's:
// the cloud stamped Server while the node's request was in flight, sent at
// Sent by the node's wall clock and answered RTT later (monotonic).
type Sample struct {
	Sent   time.Time
	RTT    time.Duration
	Server time.Time
}

// Offset is how far the cloud's clock is ahead of the node's (negative: the
// node's is ahead), estimated as if the cloud stamped the message half way
// through the round trip. The true offset is within ±Error of it, whatever
// the paths' asymmetry, as long as the cloud stamped it in between.
func (s Sample) Offset() time.Duration {
	return s.Server.Sub(s.Sent.Round(0).Add(s.RTT / 2))
}

// Error is the bound of the estimate's error: half the round trip.
func (s Sample) Error() time.Duration { return s.RTT / 2 }

// Offset holds the latest estimate of the node's offset from the cloud.
// Safe for concurrent use.
type Offset struct {
	mu     sync.Mutex
	latest Sample
	ok     bool
}

// Observe records a sample.
func (o *Offset) Observe(s Sample) {
	o.mu.Lock()
	o.latest, o.ok = s, true
	o.mu.Unlock()
}

// Latest returns the latest sample; false before the first.
func (o *Offset) Latest() (Sample, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest, o.ok
}
