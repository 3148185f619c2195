package clock

import "time"

// Jump is a step of the wall clock: By is how far it moved beyond the
// monotonic time that passed (negative: backwards), At the wall clock just
// after it.
type Jump struct {
	By time.Duration
	At time.Time
}

// Direction is "forward" or "backward".
func (j Jump) Direction() string {
	if j.By < 0 {
		return "backward"
	}
	return "forward"
}

// Detector finds jumps of the wall clock by comparing the wall time elapsed
// between two calls of Check with the monotonic time elapsed: a difference
// beyond the threshold is a jump. A slewing NTP daemon changes the rate by
// at most 500 ppm, 0.5 ms a second: far below any useful threshold.
// Not safe for concurrent use.
type Detector struct {
	c         Clock
	threshold time.Duration
	wall      time.Time
	mono      time.Duration
}

// NewDetector returns a detector of jumps beyond threshold, starting from
// c's readings now.
func NewDetector(c Clock, threshold time.Duration) *Detector {
	return &Detector{c: c, threshold: threshold, wall: c.Now().Round(0), mono: c.Mono()}
}

// Check compares the readings with those of the previous Check and reports
// a jump if there was one since.
func (d *Detector) Check() (Jump, bool) {
	wall, mono := d.c.Now().Round(0), d.c.Mono()
	skew := wall.Sub(d.wall) - (mono - d.mono)
	d.wall, d.mono = wall, mono
	if skew > d.threshold || -skew > d.threshold {
		return Jump{By: skew, At: wall}, true
	}
	return Jump{}, false
}
