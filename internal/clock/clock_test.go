package clock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var base = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func TestDetectorFindsJumpsBothWays(t *testing.T) {
	c := NewFake(base)
	d := NewDetector(c, time.Second)
	c.Advance(time.Second)
	_, ok := d.Check()
	require.False(t, ok, "time passing is no jump")

	c.Advance(time.Second)
	c.Jump(time.Hour)
	j, ok := d.Check()
	require.True(t, ok)
	require.Equal(t, time.Hour, j.By)
	require.Equal(t, "forward", j.Direction())
	require.Equal(t, base.Add(2*time.Second+time.Hour), j.At)

	c.Advance(time.Second)
	_, ok = d.Check()
	require.False(t, ok, "a jump is reported once")

	c.Jump(-time.Hour)
	j, ok = d.Check()
	require.True(t, ok)
	require.Equal(t, -time.Hour, j.By)
	require.Equal(t, "backward", j.Direction())

	c.Jump(900 * time.Millisecond) // under the threshold
	_, ok = d.Check()
	require.False(t, ok)
}

func TestStamperNeverGoesBackwards(t *testing.T) {
	c := NewFake(base)
	s := NewStamper(c.Now)
	first := s.Stamp()
	require.Equal(t, base.UnixMilli(), first)
	c.Advance(time.Second)
	c.Jump(-time.Hour)
	held := s.Stamp()
	require.Equal(t, first, held, "held at the last time stamped")
	require.Equal(t, time.Hour-time.Second, s.Held())
	c.Jump(2 * time.Hour)
	require.Equal(t, base.Add(time.Hour+time.Second).UnixMilli(), s.Stamp(), "follows a forward jump")

	s.Raise(base.Add(3 * time.Hour).UnixMilli())
	require.Equal(t, base.Add(3*time.Hour).UnixMilli(), s.Stamp())
	s.Raise(0)
	require.Equal(t, base.Add(3*time.Hour).UnixMilli(), s.Stamp())
}

func TestSteadyIgnoresJumps(t *testing.T) {
	c := NewFake(base)
	s := NewSteady(c)
	c.Advance(time.Minute)
	c.Jump(time.Hour)
	require.Equal(t, base.Add(time.Minute), s.Now())
	require.Equal(t, time.Hour, s.Drift())
	c.Jump(-2 * time.Hour)
	c.Advance(time.Second)
	require.Equal(t, base.Add(time.Minute+time.Second), s.Now())
	s.Rebase()
	require.Equal(t, c.Now(), s.Now())
	require.Zero(t, s.Drift())
}

func TestSampleOffset(t *testing.T) {
	// The cloud is 3 s ahead; the message was stored 10 ms into a 40 ms
	// round trip: the estimate is off by 10 ms, within the ±20 ms bound.
	sent := base
	s := Sample{Sent: sent, RTT: 40 * time.Millisecond, Server: sent.Add(3*time.Second + 10*time.Millisecond)}
	require.Equal(t, 3*time.Second-10*time.Millisecond, s.Offset())
	require.Equal(t, 20*time.Millisecond, s.Error())
}

func TestSystemClock(t *testing.T) {
	m := System.Mono()
	time.Sleep(time.Millisecond)
	require.Greater(t, System.Mono(), m)
	require.WithinDuration(t, time.Now(), System.Now(), time.Second)
}
