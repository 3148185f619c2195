package auth

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// TestDeviceCert: a verified certificate stands for the first of its names
// (CN, then DNS names) that is an active device; a username must be one of
// them; revoked and unknown names are refused and counted, without spending
// the source's failure budget.
func TestDeviceCert(t *testing.T) {
	f := newFixture(t)
	f.addDevice(t, "dev-a")
	f.addDevice(t, "dev-b", "temp")
	f.addDevice(t, "dev-r")
	require.NoError(t, RevokeDevice(f.devices, "dev-r"))
	a := f.open(t)
	m := NewMetrics(prometheus.NewRegistry())
	lim := NewLimiter(LimiterOptions{Burst: 1})
	g := Guard{Auth: a, Limiter: lim, Metrics: m, Transport: TransportMQTT}
	cert := func(cn string, dns ...string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}
	}

	d, err := g.DeviceCert("10.0.0.1:1", "", cert("dev-a"))
	require.NoError(t, err)
	require.Equal(t, "dev-a", d.ID)
	d, err = g.DeviceCert("10.0.0.1:1", "", cert("gateway-7", "dev-b"))
	require.NoError(t, err, "a DNS name")
	require.Equal(t, []string{"temp"}, d.Streams, "the entry's streams")
	d, err = g.DeviceCert("10.0.0.1:1", "dev-b", cert("dev-a", "dev-b"))
	require.NoError(t, err)
	require.Equal(t, "dev-b", d.ID, "the username picks among the names")

	for _, tc := range []struct {
		user string
		cert *x509.Certificate
		err  error
	}{
		{"dev-b", cert("dev-a"), ErrWrongDevice},
		{"", cert("dev-r"), ErrRevoked},
		{"", cert("stranger", "other"), ErrUnknown},
		{"", cert(""), ErrNoCredentials},
	} {
		_, err := g.DeviceCert("10.0.0.1:1", tc.user, tc.cert)
		require.ErrorIs(t, err, tc.err)
		require.Equal(t, 1.0, testutil.ToFloat64(m.failures.WithLabelValues(TransportMQTT, Reason(tc.err))))
	}
	require.True(t, lim.Allow("10.0.0.1:1"), "a verified certificate is not a guess")

	// No devices file: the certificate alone vouches for its CN.
	d, err = Guard{Transport: TransportMQTT}.DeviceCert("10.0.0.1:1", "", cert("anything", "x"))
	require.NoError(t, err)
	require.Equal(t, Device{ID: "anything"}, d)

	_, err = a.ActiveDevice("dev-r")
	require.ErrorIs(t, err, ErrRevoked)
	_, err = f.open(t).ActiveDevice("nope")
	require.ErrorIs(t, err, ErrUnknown)
}
