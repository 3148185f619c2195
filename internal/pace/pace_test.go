package pace

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPaceChargesWorkAgainstTheBudget: off, Pace never waits; on, the work
// since Start is charged against a budget of share of one core, so a
// goroutine that worked past the budget waits until the budget has paid
// for it; time spent idle is not charged.
func TestPaceChargesWorkAgainstTheBudget(t *testing.T) {
	const slice, share = 5 * time.Millisecond, 0.5
	p := New(share, slice)
	w := p.Worker()
	ctx := context.Background()

	for range 3 {
		require.True(t, w.Pace(ctx))
		time.Sleep(slice)
	}
	_, rests := p.Rested()
	require.Zero(t, rests, "waited while off")

	require.True(t, p.SetOn(true))
	require.False(t, p.SetOn(true), "SetOn reported a change that was none")
	w.Start()
	time.Sleep(maxCharge * slice)
	require.True(t, w.Pace(ctx))
	rested, rests := p.Rested()
	require.EqualValues(t, 1, rests)
	// Charged maxCharge slices (however long the sleep really was); the
	// budget held at most one (its burst), so the rest were paid for at
	// share of real time.
	require.GreaterOrEqual(t, rested, time.Duration(float64((maxCharge-1)*slice)/share)-time.Millisecond)

	// Idle: the wait for work is not work.
	w.Idle()
	time.Sleep(maxCharge * slice)
	require.True(t, w.Pace(ctx)) // only starts the clock
	_, rests = p.Rested()
	require.EqualValues(t, 1, rests, "charged an idle wait")

	// A wait ends with the context.
	w.Start()
	time.Sleep(maxCharge * slice)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.False(t, w.Pace(cctx))

	var nilPacer *Pacer
	require.True(t, nilPacer.Worker().Pace(ctx))
	require.False(t, nilPacer.On())
}
