package auth

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newTestLimiter(opts LimiterOptions) (*Limiter, *time.Time) {
	l := NewLimiter(opts)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	return l, &now
}

func TestLimiter(t *testing.T) {
	l, now := newTestLimiter(LimiterOptions{Burst: 3, Every: time.Second})
	addr := "192.0.2.7:40000"
	for range 3 {
		require.True(t, l.Allow(addr))
		l.Failure(addr)
	}
	require.False(t, l.Allow(addr))
	require.False(t, l.Allow("192.0.2.7:40001"), "the port does not matter")
	require.False(t, l.Allow("192.0.2.7"))
	require.True(t, l.Allow("192.0.2.8:40000"), "other sources are not affected")
	*now = now.Add(time.Second)
	require.True(t, l.Allow(addr), "one failure earned back")
	l.Failure(addr)
	require.False(t, l.Allow(addr))

	// IPv6 by /64.
	l.Failure("[2001:db8:1:2::1]:1")
	l.Failure("[2001:db8:1:2::ffff]:1")
	l.Failure("2001:db8:1:2:aaaa::1")
	require.False(t, l.Allow("[2001:db8:1:2::9]:5"))
	require.True(t, l.Allow("[2001:db8:1:3::1]:5"))
	// IPv4-mapped IPv6 is the IPv4 address.
	require.False(t, l.Allow("[::ffff:192.0.2.7]:1"))
}

func TestLimiterBounded(t *testing.T) {
	l, now := newTestLimiter(LimiterOptions{Burst: 2, Every: time.Minute, MaxSources: 100})
	for i := range 10000 {
		l.Failure(fmt.Sprintf("10.%d.%d.%d:1", i>>16, (i>>8)&255, i&255))
		*now = now.Add(time.Millisecond)
	}
	require.LessOrEqual(t, l.Len(), 100)
	// The newest attackers are still tracked.
	l.Failure("10.0.39.15:1") // i = 9999
	require.False(t, l.Allow("10.0.39.15:1"))

	// Sources whose budget refilled are forgotten first.
	*now = now.Add(time.Hour)
	l.Failure("192.0.2.1:1")
	require.Equal(t, 1, l.Len())

	// An unparsable address is bounded too.
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'x'
	}
	require.Len(t, sourceKey(string(long)), 64)
}
