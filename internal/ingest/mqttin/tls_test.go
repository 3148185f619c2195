package mqttin

import (
	"bytes"
	"crypto/tls"
	"testing"

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
