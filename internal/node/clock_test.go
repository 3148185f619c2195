package node

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/config"
)

// clockFixture is a clock watch on a fake clock, its alerts collected.
type clockFixture struct {
	clk    *clock.Fake
	w      *clockWatch
	mu     sync.Mutex
	alerts []alert.Alert
	// adopted counts the calls of adopt (the processor's AdoptWallClock).
	adopted int
}

func newClockFixture(t *testing.T) *clockFixture {
	f := &clockFixture{clk: clock.NewFake(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))}
	f.w = newClockWatch(config.ClockDefaults(), f.clk, prometheus.NewRegistry(), slog.New(slog.DiscardHandler), func(a alert.Alert) {
		f.mu.Lock()
		f.alerts = append(f.alerts, a)
		f.mu.Unlock()
	})
	f.w.detector = clock.NewDetector(f.clk, f.w.cfg.JumpThreshold) // checked by hand, not every second
	adopt := func(min time.Duration) time.Duration {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.adopted++
		return 0
	}
	f.w.adopt.Store(&adopt)
	return f
}

func (f *clockFixture) states() []alert.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []alert.State
	for _, a := range f.alerts {
		if a.Rule != "clock-offset" {
			panic("not a clock-offset alert: " + a.Rule)
		}
		out = append(out, a.State)
	}
	return out
}

func (f *clockFixture) status() *api.ClockStatus {
	var s api.Status
	f.w.status(&s)
	return s.Clock
}

// sample is a measurement with the cloud's clock off the node's by off,
// stored in the middle of a 20 ms round trip.
func (f *clockFixture) sample(off time.Duration) clock.Sample {
	sent := f.clk.Now()
	return clock.Sample{Sent: sent, RTT: 20 * time.Millisecond, Server: sent.Add(10*time.Millisecond + off)}
}

// TestClockJumpsDetectedAndOffsetAlerts: the wall clock jumps an hour back
// and an hour forward: each jump is counted once and shown; a measured
// offset moves with the jumps, so clock-offset fires on the first and
// resolves on the second.
func TestClockJumpsDetectedAndOffsetAlerts(t *testing.T) {
	f := newClockFixture(t)
	st := f.status()
	require.Nil(t, st.OffsetMS)
	require.Nil(t, st.LastJump)

	f.w.observe(f.sample(30 * time.Millisecond))
	st = f.status()
	require.Equal(t, int64(30), *st.OffsetMS)
	require.Equal(t, int64(10), *st.OffsetErrorMS)
	require.Empty(t, f.states())

	f.clk.Advance(time.Second)
	f.w.check()
	require.Zero(t, f.status().Jumps, "time passing is no jump")

	f.clk.Advance(time.Second)
	f.clk.Jump(-time.Hour)
	f.w.check()
	st = f.status()
	require.Equal(t, uint64(1), st.Jumps)
	require.Equal(t, "backward", st.LastJump.Direction)
	require.Equal(t, -time.Hour.Milliseconds(), st.LastJump.ByMS)
	require.Equal(t, (time.Hour + 30*time.Millisecond).Milliseconds(), *st.OffsetMS, "the cloud's clock did not jump")
	require.Equal(t, []alert.State{alert.Firing}, f.states())
	require.Equal(t, 1.0, testutil.ToFloat64(f.w.jumps.WithLabelValues("backward")))
	var s api.Status
	f.w.status(&s)
	require.Len(t, s.Problems, 1)

	f.clk.Advance(time.Second)
	f.w.check()
	require.Equal(t, uint64(1), f.status().Jumps, "a jump is counted once")

	f.clk.Jump(time.Hour)
	f.w.check()
	st = f.status()
	require.Equal(t, uint64(2), st.Jumps)
	require.Equal(t, "forward", st.LastJump.Direction)
	require.Equal(t, int64(30), *st.OffsetMS)
	require.Equal(t, []alert.State{alert.Firing, alert.Resolved}, f.states())
	require.Equal(t, 1.0, testutil.ToFloat64(f.w.jumps.WithLabelValues("forward")))
}

// TestClockOffsetAlertFromMeasurements: offsets from a fake source above
// clock.max_offset either way fire clock-offset once; back under, it
// resolves, with the same id.
func TestClockOffsetAlertFromMeasurements(t *testing.T) {
	f := newClockFixture(t)
	f.w.observe(f.sample(1900 * time.Millisecond))
	require.Empty(t, f.states())
	f.w.observe(f.sample(2500 * time.Millisecond))
	f.w.observe(f.sample(-3 * time.Second)) // still above, the other way: no second alert
	require.Equal(t, []alert.State{alert.Firing}, f.states())
	require.Equal(t, int64(-3000), *f.status().OffsetMS)
	f.w.observe(f.sample(-100 * time.Millisecond))
	require.Equal(t, []alert.State{alert.Firing, alert.Resolved}, f.states())
	require.Equal(t, f.alerts[0].ID, f.alerts[1].ID)
	require.Equal(t, 2.0, f.alerts[0].Threshold)
	require.Equal(t, -0.1, testutil.ToFloat64(f.w.offsetG))
	require.Equal(t, 2, f.adopted, "only offsets within max_offset vouch for the wall clock")
}
