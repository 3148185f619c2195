package main

import (
	"fmt"
	"time"

	"github.com/holdfast-edge/holdfast/internal/api"
)

// clockLine is the Clock row of `holdfast status`: the offset from the
// cloud's clock and the wall-clock jumps.
func clockLine(c *api.ClockStatus, now time.Time) string {
	off := "offset from the cloud not measured yet"
	if c.OffsetMS != nil {
		off = fmt.Sprintf("%+d ms from the cloud (±%d ms, measured %s)", *c.OffsetMS, deref(c.OffsetErrorMS), agoRFC3339(deref(c.OffsetMeasuredAt), now))
	}
	jumps := "no jumps"
	if j := c.LastJump; j != nil {
		jumps = fmt.Sprintf("%d jump%s, last %s by %s %s", c.Jumps, plural(int(c.Jumps), "", "s"), j.Direction,
			(time.Duration(j.ByMS) * time.Millisecond).Abs(), agoRFC3339(j.At, now))
	}
	return off + ", " + jumps
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
