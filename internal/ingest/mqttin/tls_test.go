package mqttin

import (
	"bytes"
	"context"
	"crypto/tls"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// certHook records the common name of each client's verified certificate as
// an authentication hook sees it: through cl.Net.Conn, a *tls.Conn whose
// handshake is done once CONNECT has been read.
type certHook struct {
	mqtt.HookBase
	seen chan string
}

func (h *certHook) ID() string { return "cert" }
func (h *certHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}
func (h *certHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	cn := ""
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 {
			cn = st.VerifiedChains[0][0].Subject.CommonName
		}
	}
	h.seen <- cn
	return true
}
func (h *certHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func TestBrokerTLSHookSeesClientCertificate(t *testing.T) {
	ca := tlstest.NewCA(t, "site CA")
	dir := t.TempDir()
	cert, key := ca.Server(t, "broker").Write(t, dir, "server")
	r, err := tlsconf.Load(cert, key, ca.WriteCA(t, dir, "ca.pem"))
	require.NoError(t, err)
	hook := &certHook{seen: make(chan string, 2)}
	b := startBroker(t, newFakeAppender(), nil, BrokerOptions{TLSConfig: r.ServerConfig(), Auth: hook})

	opts := v3Options(b.Addr(), "with-cert")
	opts.Servers[0].Scheme = "ssl"
	opts.SetTLSConfig(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "sensor-7").TLS(t)}})
	c := connectV3(t, opts)
	require.Equal(t, "sensor-7", recv(t, "the hook's view", hook.seen))
	waitToken(t, c.Publish("devices/sensor-7/temp", 1, false, "20"))

	opts = v3Options(b.Addr(), "without-cert")
	opts.Servers[0].Scheme = "ssl"
	opts.SetTLSConfig(&tls.Config{RootCAs: ca.Pool()})
	connectV3(t, opts)
	require.Equal(t, "", recv(t, "the hook's view", hook.seen), "no certificate: the client connects, authenticated otherwise")
}

// TestSubscriberOverTLS subscribes to a site broker on ssl:// with a client
// certificate, and not with a CA the broker's certificate is not from.
func TestSubscriberOverTLS(t *testing.T) {
	ca, wrongCA := tlstest.NewCA(t, "site CA"), tlstest.NewCA(t, "other CA")
	dir := t.TempDir()
	cert, key := ca.Server(t, "site-broker").Write(t, dir, "server")
	r, err := tlsconf.Load(cert, key, ca.WriteCA(t, dir, "ca.pem"))
	require.NoError(t, err)
	hook := &certHook{seen: make(chan string, 4)}
	b := startBroker(t, newFakeAppender(), nil, BrokerOptions{TLSConfig: r.ServerConfig(), Auth: hook})

	subscribe := func(tc *tls.Config) (*Subscriber, *fakeAppender) {
		app := newFakeAppender()
		s, err := NewSubscriber(SubscriberOptions{
			BrokerURL: "ssl://" + b.Addr(), ClientID: "holdfast-site", TLSConfig: tc,
			ConnectTimeout: 5 * time.Second, Backoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
			Logger: discardLogger(),
		}, app, nil)
		require.NoError(t, err)
		require.NoError(t, s.Start(context.Background()))
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s, app
	}

	s, app := subscribe(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "holdfast").TLS(t)}})
	eventually(t, "subscriber connected", s.Connected)
	require.Equal(t, "holdfast", recv(t, "the broker's view of the subscriber", hook.seen))

	opts := v3Options(b.Addr(), "device")
	opts.Servers[0].Scheme = "ssl"
	opts.SetTLSConfig(&tls.Config{RootCAs: ca.Pool()})
	dev := connectV3(t, opts)
	recv(t, "the device connected", hook.seen)
	waitToken(t, dev.Publish("devices/d1/temp", 1, false, `{"value":1,"id":"e-1"}`))
	eventually(t, "the subscriber stores the event", func() bool { return app.count() == 1 })

	bad, _ := subscribe(&tls.Config{RootCAs: wrongCA.Pool()})
	time.Sleep(200 * time.Millisecond) // several attempts at the backoff
	require.False(t, bad.Connected(), "the broker's certificate is not from the CA given")
}
