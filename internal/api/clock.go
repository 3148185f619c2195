package api

// ClockStatus is the node's clock as /v1/status shows it: its offset from the
// cloud's clock and the jumps of its wall clock (docs/OPERATIONS.md, "Clock").
type ClockStatus struct {
	// OffsetMS is how far the cloud's clock is ahead of the node's, in ms
	// (negative: the node's is ahead), within ±OffsetErrorMS; null until
	// first measured, after a confirmed batch to cloud.url.
	OffsetMS      *int64 `json:"offset_ms"`
	OffsetErrorMS *int64 `json:"offset_error_ms"`
	// OffsetMeasuredAt is when it was measured, by the node's wall clock
	// (RFC 3339); null until then. A jump since shifts OffsetMS by as much.
	OffsetMeasuredAt *string `json:"offset_measured_at"`
	// MaxOffsetMS is clock.max_offset: the clock-offset alert fires above it.
	MaxOffsetMS int64 `json:"max_offset_ms"`
	// Jumps counts the wall-clock jumps since the node started; LastJump is
	// the latest, null before the first.
	Jumps    uint64     `json:"jumps"`
	LastJump *ClockJump `json:"last_jump"`
}

// ClockJump is one jump of the wall clock: when (the wall clock just after
// it, RFC 3339), by how much beyond the time that passed, and which way.
type ClockJump struct {
	At        string `json:"at"`
	ByMS      int64  `json:"by_ms"`
	Direction string `json:"direction"` // forward | backward
}
