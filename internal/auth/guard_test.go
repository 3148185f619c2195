package auth

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func TestGuard(t *testing.T) {
	f := newFixture(t)
	dev := f.addDevice(t, "fridge-7", "temperature")
	read := f.addToken(t, "grafana", RoleRead)
	a := f.open(t)
	m := NewMetrics(prometheus.NewRegistry())
	lim, _ := newTestLimiter(LimiterOptions{Burst: 2})
	g := Guard{Auth: a, Limiter: lim, Metrics: m, Transport: TransportMQTT}
	const addr = "192.0.2.9:5000"

	d, err := g.DeviceLogin(addr, "fridge-7", dev)
	require.NoError(t, err)
	require.NoError(t, d.CanSend("fridge-7", "temperature"))
	require.ErrorIs(t, d.CanSend("fridge-8", "temperature"), ErrWrongDevice)
	require.ErrorIs(t, d.CanSend("fridge-7", "door"), ErrForbidden)

	// A read token asking for admin: forbidden, counted, not a guess.
	api := Guard{Auth: a, Limiter: lim, Metrics: m, Transport: TransportAPI}
	_, err = api.API(addr, read, RoleAdmin)
	require.ErrorIs(t, err, ErrForbidden)
	_, err = api.API(addr, read, RoleRead)
	require.NoError(t, err)
	require.Equal(t, 0, lim.Len())

	_, err = g.DeviceLogin(addr, "fridge-8", dev)
	require.ErrorIs(t, err, ErrWrongDevice)
	_, err = g.Device(addr, "hfd_nonsense")
	require.ErrorIs(t, err, ErrMalformed)
	_, err = g.Device(addr, dev)
	require.ErrorIs(t, err, ErrRateLimited, "two failures spent the budget: even a good token waits")
	require.Equal(t, 1.0, promtest.ToFloat64(m.failures.WithLabelValues("api", "forbidden")))
	require.Equal(t, 1.0, promtest.ToFloat64(m.failures.WithLabelValues("mqtt", "wrong_device")))
	require.Equal(t, 1.0, promtest.ToFloat64(m.failures.WithLabelValues("mqtt", "malformed")))
	require.Equal(t, 1.0, promtest.ToFloat64(m.limited.WithLabelValues("mqtt")))

	// No limiter, no metrics: only verification.
	_, err = Guard{Auth: a}.Device(addr, dev)
	require.NoError(t, err)
}

// TestGuardRefuse: Refuse counts what the listener found itself, and spends
// the source's budget like a wrong token.
func TestGuardRefuse(t *testing.T) {
	f := newFixture(t)
	f.addDevice(t, "fridge-7")
	a := f.open(t)
	m := NewMetrics(prometheus.NewRegistry())
	lim, _ := newTestLimiter(LimiterOptions{Burst: 2})
	g := Guard{Auth: a, Limiter: lim, Metrics: m, Transport: TransportHTTP}
	const addr = "192.0.2.9:5000"
	require.ErrorIs(t, g.Refuse(addr, ErrMalformed), ErrMalformed)
	require.ErrorIs(t, g.Refuse(addr, ErrMalformed), ErrMalformed)
	require.ErrorIs(t, g.Refuse(addr, ErrMalformed), ErrRateLimited, "two failures spent the budget")
	require.Equal(t, 2.0, promtest.ToFloat64(m.FailuresFor("http", "malformed")))
}
