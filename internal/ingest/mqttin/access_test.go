package mqttin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	pahopk "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// devices is a real devices file: dev-a may send any stream, dev-b only
// temp, dev-r is revoked.
type devices struct {
	path             string
	tokA, tokB, tokR string
}

func newDevices(t *testing.T) devices {
	t.Helper()
	d := devices{path: filepath.Join(t.TempDir(), "devices.yaml")}
	var err error
	d.tokA, err = auth.AddDevice(d.path, "dev-a", nil)
	require.NoError(t, err)
	d.tokB, err = auth.AddDevice(d.path, "dev-b", []string{"temp"})
	require.NoError(t, err)
	d.tokR, err = auth.AddDevice(d.path, "dev-r", nil)
	require.NoError(t, err)
	require.NoError(t, auth.RevokeDevice(d.path, "dev-r"))
	return d
}

// wrongSecret is tok with its last character changed: well formed, but no
// device's token.
func wrongSecret(tok string) string {
	c := byte('a')
	if tok[len(tok)-1] == 'a' {
		c = 'b'
	}
	return tok[:len(tok)-1] + string(c)
}

// authEnv is a broker with a Guard over a devices file, and its metrics.
type authEnv struct {
	b   *Broker
	app *fakeAppender
	dev devices
	am  *prometheus.Registry // the auth metrics
	acc *AccessMetrics
}

func newAuthEnv(t *testing.T, lim *auth.Limiter, opts BrokerOptions) authEnv {
	t.Helper()
	d := newDevices(t)
	a, err := auth.New(auth.Options{Devices: d.path, Logger: discardLogger()})
	require.NoError(t, err)
	if lim == nil {
		lim = auth.NewLimiter(auth.LimiterOptions{Burst: 1000})
	}
	am := prometheus.NewRegistry()
	acc := NewAccessMetrics(prometheus.NewRegistry())
	opts.Guard = &auth.Guard{Auth: a, Limiter: lim, Metrics: auth.NewMetrics(am), Transport: auth.TransportMQTT}
	opts.AccessMetrics = acc
	app := newFakeAppender()
	b := startBroker(t, app, nil, opts)
	return authEnv{b: b, app: app, dev: d, am: am, acc: acc}
}

func authFailures(reg *prometheus.Registry, reason string) float64 {
	return counter(reg, "holdfast_auth_failures_total", "transport", auth.TransportMQTT, "reason", reason)
}

// counter returns the value of the counter name with the label pairs kv in reg.
func counter(reg *prometheus.Registry, name string, kv ...string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(kv); i += 2 {
				if labels[kv[i]] != kv[i+1] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// tryV3 connects an MQTT 3.1.1 client with username and password and
// returns the connect error (nil: connected, disconnected at the test's end).
func tryV3(t *testing.T, addr, clientID, user, pass string) (paho3.Client, error) {
	t.Helper()
	opts := v3Options(addr, clientID).SetUsername(user).SetPassword(pass)
	return tryV3Opts(t, opts)
}

func tryV3Opts(t *testing.T, opts *paho3.ClientOptions) (paho3.Client, error) {
	t.Helper()
	c := paho3.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor), "connect timed out")
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// tryV5 connects an MQTT 5 client and returns the CONNACK reason code; the
// client is nil unless it connected.
func tryV5(t *testing.T, addr, clientID, user, pass string) (*paho.Client, byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	return tryV5Conn(t, conn, clientID, user, pass, nil)
}

func tryV5Conn(t *testing.T, conn net.Conn, clientID, user, pass string, onPub func(paho.PublishReceived) (bool, error)) (*paho.Client, byte) {
	t.Helper()
	cfg := paho.ClientConfig{Conn: conn, PacketTimeout: waitFor}
	if onPub != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPub}
	}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
	}
	if pass != "" {
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	ca, err := c.Connect(ctx, cp)
	if ca == nil {
		require.NoError(t, err)
	}
	if ca.ReasonCode != 0 {
		_ = conn.Close()
		return nil, ca.ReasonCode
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		select {
		case <-c.Done():
		case <-time.After(waitFor):
			t.Error("v5 client did not shut down")
		}
	})
	return c, 0
}

func TestAuthConnect(t *testing.T) {
	e := newAuthEnv(t, nil, BrokerOptions{})
	d := e.dev
	cases := []struct {
		name, user, pass string
		v3               error
		v5               byte
		reason           string
	}{
		{"no credentials", "", "", pahopk.ErrorRefusedNotAuthorised, 0x87, "no_credentials"},
		{"username only", "dev-a", "", pahopk.ErrorRefusedNotAuthorised, 0x87, "no_credentials"},
		{"wrong token", "dev-a", wrongSecret(d.tokA), pahopk.ErrorRefusedBadUsernameOrPassword, 0x86, "unknown"},
		{"garbage token", "dev-a", "hunter2", pahopk.ErrorRefusedBadUsernameOrPassword, 0x86, "malformed"},
		{"another device's token", "dev-a", d.tokB, pahopk.ErrorRefusedBadUsernameOrPassword, 0x86, "wrong_device"},
		{"revoked token", "dev-r", d.tokR, pahopk.ErrorRefusedBadUsernameOrPassword, 0x86, "revoked"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := authFailures(e.am, tc.reason)
			_, err := tryV3(t, e.b.Addr(), "c3", tc.user, tc.pass)
			require.ErrorIs(t, err, tc.v3, "MQTT 3.1.1")
			_, code := tryV5(t, e.b.Addr(), "c5", tc.user, tc.pass)
			require.Equal(t, tc.v5, code, "MQTT 5 reason code")
			require.Equal(t, before+2, authFailures(e.am, tc.reason), "both refusals counted as %s", tc.reason)
		})
	}
	t.Run("valid token", func(t *testing.T) {
		_, err := tryV3(t, e.b.Addr(), "ok3", "dev-a", d.tokA)
		require.NoError(t, err)
		c, code := tryV5(t, e.b.Addr(), "ok5", "dev-b", d.tokB)
		require.Equal(t, byte(0), code)
		require.NotNil(t, c)
	})
}

// TestAuthClientIDOfAnotherDevice: a device may not take over another
// device's session by connecting with its client id, even after it
// disconnected (the session, with its subscriptions, is kept).
func TestAuthClientIDOfAnotherDevice(t *testing.T) {
	e := newAuthEnv(t, nil, BrokerOptions{})
	a, err := tryV3(t, e.b.Addr(), "shared", "dev-a", e.dev.tokA)
	require.NoError(t, err)
	_, err = tryV3(t, e.b.Addr(), "shared", "dev-b", e.dev.tokB)
	require.ErrorIs(t, err, pahopk.ErrorRefusedIDRejected)
	require.True(t, a.IsConnectionOpen(), "dev-a was not disconnected")
	a.Disconnect(100)
	_, code := tryV5(t, e.b.Addr(), "shared", "dev-b", e.dev.tokB)
	require.Equal(t, byte(0x85), code, "dev-a's session outlives its connection")
	_, err = tryV3(t, e.b.Addr(), "shared", "dev-a", e.dev.tokA)
	require.NoError(t, err, "dev-a resumes its own session")
	require.Equal(t, 2.0, testutil.ToFloat64(e.acc.refused.WithLabelValues("client_id_in_use")))
}

func TestAuthRateLimited(t *testing.T) {
	e := newAuthEnv(t, auth.NewLimiter(auth.LimiterOptions{Burst: 2, Every: time.Hour}), BrokerOptions{})
	for range 2 {
		_, err := tryV3(t, e.b.Addr(), "guess", "dev-a", wrongSecret(e.dev.tokA))
		require.ErrorIs(t, err, pahopk.ErrorRefusedBadUsernameOrPassword)
	}
	// The source has spent its failures: even the right token is refused, unchecked.
	_, err := tryV3(t, e.b.Addr(), "right", "dev-a", e.dev.tokA)
	require.ErrorIs(t, err, pahopk.ErrorRefusedNotAuthorised)
	_, code := tryV5(t, e.b.Addr(), "right5", "dev-a", e.dev.tokA)
	require.Equal(t, byte(0x87), code)
	require.Equal(t, 2.0, counter(e.am, "holdfast_auth_rate_limited_total", "transport", auth.TransportMQTT))
	require.Equal(t, 2.0, authFailures(e.am, "unknown"))
}

// TestAuthPublishACL: a device publishes as itself and streams it may send;
// publishing as another device (spoofing) or another stream is refused and
// nothing is stored, over MQTT 5 (PUBACK 0x87) and 3.1.1 (QoS 0 dropped,
// QoS 1: mochi closes the connection, unacknowledged).
func TestAuthPublishACL(t *testing.T) {
	e := newAuthEnv(t, nil, BrokerOptions{})
	c5, _ := tryV5(t, e.b.Addr(), "a5", "dev-a", e.dev.tokA)
	require.Equal(t, byte(0), publishV5(t, c5, "devices/dev-a/temp", []byte(`{"value":1,"id":"a-1"}`)))
	require.Equal(t, 1, e.app.count())

	require.Equal(t, byte(0x87), publishV5(t, c5, "devices/dev-b/temp", []byte(`{"value":2,"id":"spoof-1"}`)), "spoofing dev-b")
	require.Equal(t, byte(0x87), publishV5(t, c5, "elsewhere/x", []byte(`1`)), "outside devices/")
	b5, _ := tryV5(t, e.b.Addr(), "b5", "dev-b", e.dev.tokB)
	require.Equal(t, byte(0x87), publishV5(t, b5, "devices/dev-b/humidity", []byte(`{"value":3,"id":"b-1"}`)), "a stream dev-b may not send")
	require.Equal(t, byte(0), publishV5(t, b5, "devices/dev-b/temp", []byte(`{"value":4,"id":"b-2"}`)))
	require.Equal(t, 2, e.app.count())

	c3, err := tryV3(t, e.b.Addr(), "a3", "dev-a", e.dev.tokA)
	require.NoError(t, err)
	waitToken(t, c3.Publish("devices/dev-b/temp", 0, false, `{"value":5,"id":"spoof-2"}`))
	waitToken(t, c3.Publish("devices/dev-a/temp", 1, false, `{"value":6,"id":"a-2"}`))
	require.Equal(t, 3, e.app.count(), "the QoS 0 spoof was dropped, the next message stored")
	tok := c3.Publish("devices/dev-b/temp", 1, false, `{"value":7,"id":"spoof-3"}`)
	eventually(t, "3.1.1 spoofer disconnected", func() bool { return !c3.IsConnectionOpen() })
	require.False(t, tok.WaitTimeout(100*time.Millisecond) && tok.Error() == nil, "no PUBACK for the spoof")
	require.Equal(t, 3, e.app.count())
	for _, ev := range e.app.stored() {
		require.NotContains(t, ev.ID, "spoof")
	}

	require.Equal(t, 3.0, testutil.ToFloat64(e.acc.denied.WithLabelValues("publish", "wrong_device")))
	require.Equal(t, 1.0, testutil.ToFloat64(e.acc.denied.WithLabelValues("publish", "forbidden")))
	require.Equal(t, 1.0, testutil.ToFloat64(e.acc.denied.WithLabelValues("publish", "other_topic")))
}

func TestAuthSubscribeACL(t *testing.T) {
	e := newAuthEnv(t, nil, BrokerOptions{})
	c5, _ := tryV5(t, e.b.Addr(), "a5", "dev-a", e.dev.tokA)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sa, err := c5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/dev-a/#", QoS: 1},
		{Topic: "holdfast/alerts/#", QoS: 1},
		{Topic: "devices/dev-b/#", QoS: 1},
		{Topic: "devices/+/temp", QoS: 1},
		{Topic: "#", QoS: 1},
	}})
	if sa == nil {
		require.NoError(t, err)
	}
	require.Equal(t, []byte{1, 1, 0x87, 0x87, 0x87}, sa.Reasons)

	c3, err := tryV3(t, e.b.Addr(), "a3", "dev-a", e.dev.tokA)
	require.NoError(t, err)
	tok := c3.SubscribeMultiple(map[string]byte{"devices/dev-b/#": 1, "devices/dev-a/#": 1}, nil)
	waitToken(t, tok)
	require.Equal(t, map[string]byte{"devices/dev-b/#": 0x80, "devices/dev-a/#": 1}, tok.(*paho3.SubscribeToken).Result())
	require.Equal(t, 3.0, testutil.ToFloat64(e.acc.denied.WithLabelValues("subscribe", "wrong_device")), "devices/dev-b/# twice, devices/+/temp")
	require.Equal(t, 1.0, testutil.ToFloat64(e.acc.denied.WithLabelValues("subscribe", "other_topic")), "#")
}

// TestAlertPrefixPublishRefused: only the node publishes alerts, with and
// without authentication; a subscriber to the alert prefix receives the
// node's alert and nothing a client published there.
func TestAlertPrefixPublishRefused(t *testing.T) {
	for _, withAuth := range []bool{false, true} {
		name := "auth off"
		if withAuth {
			name = "auth on"
		}
		t.Run(name, func(t *testing.T) {
			var b *Broker
			var acc *AccessMetrics
			userA, passA, userB, passB := "", "", "", ""
			if withAuth {
				e := newAuthEnv(t, nil, BrokerOptions{})
				b, acc = e.b, e.acc
				userA, passA, userB, passB = "dev-a", e.dev.tokA, "dev-b", e.dev.tokB
			} else {
				acc = NewAccessMetrics(prometheus.NewRegistry())
				b = startBroker(t, newFakeAppender(), nil, BrokerOptions{AccessMetrics: acc})
			}
			got := make(chan string, 10)
			conn, err := net.Dial("tcp", b.Addr())
			require.NoError(t, err)
			display, code := tryV5Conn(t, conn, "display", userB, passB, func(p paho.PublishReceived) (bool, error) {
				got <- p.Packet.Topic + " " + string(p.Packet.Payload)
				return true, nil
			})
			require.Equal(t, byte(0), code)
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			sa, err := display.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "holdfast/alerts/#", QoS: 1}}})
			require.NoError(t, err)
			require.Equal(t, []byte{1}, sa.Reasons, "a display may read alerts")

			dev, code := tryV5(t, b.Addr(), "dev5", userA, passA)
			require.Equal(t, byte(0), code)
			require.Equal(t, byte(0x87), publishV5(t, dev, "holdfast/alerts/fake", []byte(`forged`)))
			dev3, err := tryV3(t, b.Addr(), "dev3", userA, passA)
			require.NoError(t, err)
			waitToken(t, dev3.Publish("holdfast/alerts/fake", 0, false, "forged-qos0"))

			require.NoError(t, b.Publish("holdfast/alerts/real", []byte("real"), false, 1))
			require.Equal(t, "holdfast/alerts/real real", recv(t, "the node's alert", got), "the forged alerts never arrive")
			select {
			case m := <-got:
				t.Fatalf("unexpected message %q", m)
			case <-time.After(100 * time.Millisecond):
			}
			require.Equal(t, 2.0, testutil.ToFloat64(acc.denied.WithLabelValues("publish", "alert_prefix")))
		})
	}
}

func TestAuthClientCertificate(t *testing.T) {
	ca := tlstest.NewCA(t, "site CA")
	dir := t.TempDir()
	cert, key := ca.Server(t, "broker").Write(t, dir, "server")
	r, err := tlsconf.Load(cert, key, ca.WriteCA(t, dir, "ca.pem"))
	require.NoError(t, err)
	e := newAuthEnv(t, nil, BrokerOptions{TLSConfig: r.ServerConfig()})

	withCert := func(cn, user, pass string) (paho3.Client, error) {
		opts := v3Options(e.b.Addr(), "cert-"+cn).SetUsername(user).SetPassword(pass)
		opts.Servers[0].Scheme = "ssl"
		tc := &tls.Config{RootCAs: ca.Pool()}
		if cn != "" {
			tc.Certificates = []tls.Certificate{ca.Client(t, cn).TLS(t)}
		}
		opts.SetTLSConfig(tc)
		return tryV3Opts(t, opts)
	}
	c, err := withCert("dev-a", "", "")
	require.NoError(t, err, "the certificate names an active device: no password needed")
	waitToken(t, c.Publish("devices/dev-a/temp", 1, false, `{"value":1,"id":"c-1"}`))
	require.Equal(t, 1, e.app.count())
	tok := c.Publish("devices/dev-b/temp", 1, false, `{"value":1,"id":"c-2"}`)
	eventually(t, "spoofer disconnected", func() bool { return !c.IsConnectionOpen() })
	_ = tok
	require.Equal(t, 1, e.app.count(), "the certificate's device may not publish as another")

	_, err = withCert("dev-a", "dev-a", "")
	require.NoError(t, err, "username naming the certificate's device")
	_, err = withCert("dev-a", "dev-b", "")
	require.ErrorIs(t, err, pahopk.ErrorRefusedBadUsernameOrPassword, "username of another device")
	_, err = withCert("dev-r", "", "")
	require.ErrorIs(t, err, pahopk.ErrorRefusedBadUsernameOrPassword, "revoked device")
	_, err = withCert("stranger", "", "")
	require.ErrorIs(t, err, pahopk.ErrorRefusedBadUsernameOrPassword, "no such device")
	_, err = withCert("", "", "")
	require.ErrorIs(t, err, pahopk.ErrorRefusedNotAuthorised, "no certificate, no password")
	_, err = withCert("", "dev-b", e.dev.tokB)
	require.NoError(t, err, "a token over TLS without a certificate")
	require.Equal(t, 1.0, authFailures(e.am, "wrong_device"))
	require.Equal(t, 1.0, authFailures(e.am, "revoked"))
	require.Equal(t, 1.0, authFailures(e.am, "unknown"))
	require.Equal(t, 1.0, authFailures(e.am, "no_credentials"))
}

func TestMaxConnectionsPerSource(t *testing.T) {
	acc := NewAccessMetrics(prometheus.NewRegistry())
	b := startBroker(t, newFakeAppender(), nil, BrokerOptions{MaxConnectionsPerSource: 2, AccessMetrics: acc, limitLoopback: true})
	c1, err := tryV3(t, b.Addr(), "c1", "", "")
	require.NoError(t, err)
	_, code := tryV5(t, b.Addr(), "c2", "", "")
	require.Equal(t, byte(0), code)
	_, err = tryV3(t, b.Addr(), "c3", "", "")
	require.ErrorIs(t, err, pahopk.ErrorRefusedServerUnavailable)
	_, code = tryV5(t, b.Addr(), "c4", "", "")
	require.Equal(t, byte(0x97), code)
	require.Equal(t, 2.0, testutil.ToFloat64(acc.refused.WithLabelValues("source_limit")))

	c1.Disconnect(100)
	eventually(t, "a place is free again", func() bool {
		c, err := tryV3(t, b.Addr(), "c5", "", "")
		if err != nil {
			return false
		}
		c.Disconnect(100)
		return true
	})

	// Without limitLoopback the node's own machine is not limited.
	b = startBroker(t, newFakeAppender(), nil, BrokerOptions{MaxConnectionsPerSource: 1})
	for i := range 3 {
		_, err := tryV3(t, b.Addr(), fmt.Sprintf("local-%d", i), "", "")
		require.NoError(t, err, "loopback connection %d", i)
	}
}

// FuzzMQTTConnect feeds arbitrary usernames and passwords through the
// broker's access hook: it never panics, and accepts only dev-a's token
// with dev-a's id.
func FuzzMQTTConnect(f *testing.F) {
	d := devices{path: filepath.Join(f.TempDir(), "devices.yaml")}
	tokA, err := auth.AddDevice(d.path, "dev-a", nil)
	require.NoError(f, err)
	tokB, err := auth.AddDevice(d.path, "dev-b", nil)
	require.NoError(f, err)
	a, err := auth.New(auth.Options{Devices: d.path, Logger: discardLogger()})
	require.NoError(f, err)
	b, err := NewBroker(BrokerOptions{Addr: "127.0.0.1:0", Logger: discardLogger(),
		Guard: &auth.Guard{Auth: a, Transport: auth.TransportMQTT}}, newFakeAppender(), nil)
	require.NoError(f, err)
	f.Cleanup(func() { _ = b.Close() })
	h, ok := b.access.(*accessHook)
	require.True(f, ok)

	for _, s := range [][2]string{
		{"dev-a", tokA}, {"dev-b", tokA}, {"dev-a", tokB}, {"", ""}, {"dev-a", wrongSecret(tokA)},
		{"dev-a", tokA + "x"}, {"dev-a\x00", tokA}, {"\xff\xfe", "hfd_\xff"}, {"dev-a", tokA[:len(tokA)/2]},
	} {
		f.Add([]byte(s[0]), []byte(s[1]), byte(4))
	}
	f.Fuzz(func(t *testing.T, user, pass []byte, version byte) {
		server, client := net.Pipe()
		defer server.Close()
		defer client.Close()
		go func() { _, _ = readAll(client) }()
		cl := b.srv.NewClient(server, "fuzz", "fuzz", false)
		cl.Properties.ProtocolVersion = 4
		if version%2 == 1 {
			cl.Properties.ProtocolVersion = 5
		}
		var pk packets.Packet
		pk.FixedHeader.Type = packets.Connect
		pk.Connect.Username, pk.Connect.Password = user, pass
		pk.Connect.UsernameFlag, pk.Connect.PasswordFlag = len(user) > 0, len(pass) > 0
		err := h.OnConnect(cl, pk)
		valid := string(user) == "dev-a" && string(pass) == tokA || string(user) == "dev-b" && string(pass) == tokB
		if valid {
			require.NoError(t, err)
		} else {
			require.Error(t, err, "accepted %q / %q", user, pass)
		}
	})
}

func readAll(c net.Conn) (int, error) {
	buf := make([]byte, 1024)
	n := 0
	for {
		m, err := c.Read(buf)
		n += m
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return n, nil
			}
			return n, err
		}
	}
}
