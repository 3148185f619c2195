package pace

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPaceRestsOnlyWhileOn: off, Pace never rests; on, a goroutine that has
// worked a slice rests slice × (1 − share) / share before going on, and
// time spent idle does not count as work.
func TestPaceRestsOnlyWhileOn(t *testing.T) {
	const slice = 5 * time.Millisecond
	p := New(0.5, slice)
	w := p.Worker()
	ctx := context.Background()

	for range 3 {
		require.True(t, w.Pace(ctx))
		time.Sleep(slice)
	}
	_, rests := p.Rested()
	require.Zero(t, rests, "rested while off")

	require.True(t, p.SetOn(true))
	require.False(t, p.SetOn(true), "SetOn reported a change that was none")
	require.True(t, w.Pace(ctx)) // starts the slice
	time.Sleep(slice)
	t0 := time.Now()
	require.True(t, w.Pace(ctx))
	rested, rests := p.Rested()
	require.EqualValues(t, 1, rests)
	// share 0.5: the rest equals the work, but a long slice (the machine
	// was slow to wake the goroutine) is repaid at most 4 slices' worth.
	require.GreaterOrEqual(t, rested, slice)
	require.LessOrEqual(t, rested, 4*slice)
	require.GreaterOrEqual(t, time.Since(t0), rested)

	// Idle: the wait for work is not work.
	w.Idle()
	time.Sleep(2 * slice)
	require.True(t, w.Pace(ctx))
	_, rests = p.Rested()
	require.EqualValues(t, 1, rests, "rested after an idle wait")

	// A rest ends with the context.
	time.Sleep(slice)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.False(t, w.Pace(cctx))

	var nilPacer *Pacer
	require.True(t, nilPacer.Worker().Pace(ctx))
	require.False(t, nilPacer.On())
}
