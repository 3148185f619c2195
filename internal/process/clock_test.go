package process

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// TestIdleTimeoutIgnoresWallClockJumps: a quiet stream's window closes by the
// idle timeout neither early when the wall clock jumps an hour forward nor
// late when it then jumps two hours back.
func TestIdleTimeoutIgnoresWallClockJumps(t *testing.T) {
	fs := vfs.NewMem()
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: fs})
	require.NoError(t, err)
	defer l.Close()
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	start := time.UnixMilli(t0).Add(10 * time.Second) // the window is [t0, t0+1m)
	clk := clock.NewFake(start)
	p, err := New(st, Options{
		Window:      window.Options{Sizes: []time.Duration{time.Minute}, AllowedLateness: window.NoLateness},
		IdleTimeout: time.Second, Workers: 1, clock: clk,
	})
	require.NoError(t, err)
	p.Start()
	defer p.Close()
	_, err = st.Append(context.Background(), []event.Event{{DeviceID: "d", Stream: "s", TS: start.UnixMilli(), Value: 7}})
	require.NoError(t, err)
	for p.Status().Processed < 1 {
		time.Sleep(time.Millisecond)
	}
	closed := func() int {
		wp, err := st.QueryWindows(store.WindowQuery{Stream: "s", DeviceID: "d"})
		require.NoError(t, err)
		return len(wp.Windows)
	}

	// An hour forward, and the idle timeout passes: by the wall clock the
	// window ended long ago, but only 2 s passed; it must stay open.
	clk.Jump(time.Hour)
	clk.Advance(2 * time.Second)
	time.Sleep(600 * time.Millisecond) // several idle checks (every 100 ms, real time)
	require.Zero(t, closed(), "window closed early after a forward jump")

	// Two hours back: 60 s more pass, the window's end is behind us; it
	// must close now, not when the wall clock catches up in an hour.
	clk.Jump(-2 * time.Hour)
	clk.Advance(60 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for closed() == 0 {
		require.True(t, time.Now().Before(deadline), "window not closed after a backward jump")
		time.Sleep(20 * time.Millisecond)
	}
	require.Equal(t, 1, closed())
}

// TestAdoptWallClock: once told the wall clock is good, idle timeouts follow
// the jump they ignored; a drift under the minimum is left alone.
func TestAdoptWallClock(t *testing.T) {
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: vfs.NewMem()})
	require.NoError(t, err)
	defer l.Close()
	clk := clock.NewFake(time.UnixMilli(t0))
	p, err := Prepare(l, Options{clock: clk, Workers: 1})
	require.NoError(t, err)
	clk.Jump(500 * time.Millisecond)
	require.Zero(t, p.AdoptWallClock(time.Second))
	clk.Jump(time.Hour)
	require.Equal(t, time.Hour+500*time.Millisecond, p.AdoptWallClock(time.Second))
	require.Equal(t, clk.Now(), p.steady.Now())
}
