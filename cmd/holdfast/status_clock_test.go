package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/api"
)

func TestClockLine(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	require.Equal(t, "offset from the cloud not measured yet, no jumps", clockLine(&api.ClockStatus{}, now))
	off, e, at := int64(-1234), int64(7), now.Add(-5*time.Second).Format(time.RFC3339Nano)
	got := clockLine(&api.ClockStatus{OffsetMS: &off, OffsetErrorMS: &e, OffsetMeasuredAt: &at, Jumps: 2,
		LastJump: &api.ClockJump{At: now.Add(-time.Minute).Format(time.RFC3339Nano), ByMS: -3600000, Direction: "backward"}}, now)
	require.Contains(t, got, "-1234 ms from the cloud (±7 ms")
	require.Contains(t, got, "2 jumps, last backward by 1h0m0s")
	t.Log(got)
}
