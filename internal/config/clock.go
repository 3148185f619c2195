package config

import "time"

// Clock configures how the node watches its own clock (docs/OPERATIONS.md,
// "Clock").
type Clock struct {
	// JumpThreshold is the smallest wall-clock step that counts as a jump:
	// the wall clock is compared with the monotonic clock every second, and
	// a jump is logged, counted in holdfast_clock_jumps_total and shown in
	// status.
	JumpThreshold time.Duration `yaml:"jump_threshold"`
	// MaxOffset is how far the node's clock may be from the cloud's before
	// the clock-offset alert fires; it resolves once back under. The offset
	// is measured after confirmed batches to cloud.url, every 10 s at most.
	MaxOffset time.Duration `yaml:"max_offset"`
}

// Defaults of the clock keys.
const (
	DefaultClockJumpThreshold = time.Second
	DefaultClockMaxOffset     = 2 * time.Second
)

// ClockDefaults returns the clock section's defaults.
func ClockDefaults() Clock {
	return Clock{JumpThreshold: DefaultClockJumpThreshold, MaxOffset: DefaultClockMaxOffset}
}

func (c Clock) validate(bad func(key, format string, args ...any)) {
	// A slewing NTP daemon moves the clock by at most 0.5 ms a second; the
	// detector's own scheduling jitter is a few ms.
	if c.JumpThreshold < 50*time.Millisecond {
		bad("clock.jump_threshold", "%v must be at least 50ms", c.JumpThreshold)
	}
	if c.MaxOffset <= 0 {
		bad("clock.max_offset", "%v must be positive", c.MaxOffset)
	}
}
