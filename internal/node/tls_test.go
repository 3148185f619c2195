package node

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// deviceTokens are the tokens of device d1 on the nodes tlsNode started:
// client_ca turns authentication on, so ingest needs a device.
var deviceTokens sync.Map // *Node → string

// tlsNode starts a node with HTTPS and MQTT over TLS, client certificates
// from ca verified if given, and device d1 in its devices file.
func tlsNode(t *testing.T, ca *tlstest.CA, server tlstest.Leaf) (*Node, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.Windows.Enabled = false
	cfg.Security.TLS.Cert, cfg.Security.TLS.Key = server.Write(t, dir, "server")
	cfg.Security.TLS.ClientCA = ca.WriteCA(t, dir, "client-ca.pem")
	cfg.Security.Devices = filepath.Join(dir, "devices.yaml")
	token, err := auth.AddDevice(cfg.Security.Devices, "d1", nil)
	require.NoError(t, err)
	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	deviceTokens.Store(n, token)
	t.Cleanup(func() { n.Close() })
	return n, dir
}

// postEvent POSTs one event over a new connection with tc.
func postEvent(n *Node, tc *tls.Config) (int, error) {
	tr := &http.Transport{TLSClientConfig: tc}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, err := http.NewRequest("POST", "https://"+n.HTTPAddr()+"/v1/events",
		strings.NewReader(`{"device_id":"d1","stream":"temp","value":21.5}`))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if tok, ok := deviceTokens.Load(n); ok {
		req.Header.Set("Authorization", "Bearer "+tok.(string))
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// present makes a client send c whatever CAs the server asks for (a Go
// client with Certificates sends none that does not chain to them).
func present(c tls.Certificate) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
}

func TestHTTPSListener(t *testing.T) {
	ca, wrongCA := tlstest.NewCA(t, "site CA"), tlstest.NewCA(t, "other CA")
	n, dir := tlsNode(t, ca, ca.Server(t, "holdfast"))

	t.Run("valid", func(t *testing.T) {
		code, err := postEvent(n, &tls.Config{RootCAs: ca.Pool()})
		require.NoError(t, err)
		require.Equal(t, 200, code)
	})
	t.Run("plain HTTP is not served", func(t *testing.T) {
		resp, err := http.Get("http://" + n.HTTPAddr() + "/healthz")
		if err == nil {
			defer resp.Body.Close()
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, "Go answers plain HTTP on a TLS port with 400")
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		_, err := postEvent(n, &tls.Config{RootCAs: wrongCA.Pool()})
		var ua x509.UnknownAuthorityError
		require.ErrorAs(t, err, &ua)
	})
	t.Run("wrong name", func(t *testing.T) {
		_, err := postEvent(n, &tls.Config{RootCAs: ca.Pool(), ServerName: "other.example"})
		var he x509.HostnameError
		require.ErrorAs(t, err, &he)
	})
	t.Run("client certificate from the client CA", func(t *testing.T) {
		code, err := postEvent(n, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "d1").TLS(t)}})
		require.NoError(t, err)
		require.Equal(t, 200, code)
	})
	t.Run("client certificate from another CA is refused", func(t *testing.T) {
		_, err := postEvent(n, &tls.Config{RootCAs: ca.Pool(), GetClientCertificate: present(wrongCA.Client(t, "d1").TLS(t))})
		require.Error(t, err)
		require.Contains(t, err.Error(), "certificate", "a TLS alert about the certificate: %v", err)
	})
	t.Run("expired server certificate", func(t *testing.T) {
		ca.ExpiredServer(t).Write(t, dir, "server")
		require.NoError(t, n.ReloadTLS())
		_, err := postEvent(n, &tls.Config{RootCAs: ca.Pool()})
		var ci x509.CertificateInvalidError
		require.ErrorAs(t, err, &ci)
		require.Equal(t, x509.Expired, ci.Reason)
	})
	t.Run("a bad file on reload keeps the certificate in force", func(t *testing.T) {
		ca.Server(t, "holdfast").Write(t, dir, "server")
		require.NoError(t, n.ReloadTLS())
		tlstest.Leaf{CertPEM: []byte("garbage"), KeyPEM: []byte("garbage")}.Write(t, dir, "server")
		require.Error(t, n.ReloadTLS())
		code, err := postEvent(n, &tls.Config{RootCAs: ca.Pool()})
		require.NoError(t, err)
		require.Equal(t, 200, code)
		require.Equal(t, 2.0, testutil.ToFloat64(n.tlsReloads.WithLabelValues("ok")))
		require.Equal(t, 1.0, testutil.ToFloat64(n.tlsReloads.WithLabelValues("failed")))
	})
}

func TestMQTTOverTLS(t *testing.T) {
	ca, wrongCA := tlstest.NewCA(t, "site CA"), tlstest.NewCA(t, "other CA")
	n, _ := tlsNode(t, ca, ca.Server(t, "holdfast"))
	connect := func(tc *tls.Config) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + n.MQTTAddr()).
			SetClientID("tls-test").SetTLSConfig(tc).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, errors.New("connect timed out")
		}
		return c, tok.Error()
	}

	t.Run("right CA", func(t *testing.T) {
		before := n.buf.NextOffset()
		// With client_ca the broker takes devices by their certificate (or token).
		c, err := connect(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "d1").TLS(t)}})
		require.NoError(t, err)
		defer c.Disconnect(100)
		tok := c.Publish("devices/d1/temp", 1, false, "21.5")
		require.True(t, tok.WaitTimeout(10*time.Second))
		require.NoError(t, tok.Error())
		require.Greater(t, n.buf.NextOffset(), before, "the event is in the log")
	})
	t.Run("no client certificate nor token", func(t *testing.T) {
		_, err := connect(&tls.Config{RootCAs: ca.Pool()})
		require.ErrorContains(t, err, "not Authorized")
	})
	t.Run("wrong CA", func(t *testing.T) {
		_, err := connect(&tls.Config{RootCAs: wrongCA.Pool()})
		var ua x509.UnknownAuthorityError
		require.ErrorAs(t, err, &ua)
	})
	t.Run("client certificate from another CA is refused", func(t *testing.T) {
		_, err := connect(&tls.Config{RootCAs: ca.Pool(), GetClientCertificate: present(wrongCA.Client(t, "d1").TLS(t))})
		require.Error(t, err)
	})
}

// TestCloudOverTLSWithPassword syncs to a NATS server that requires TLS and
// a user and password: the JetStream sink delivers and the config reaches
// the registry.
func TestCloudOverTLSWithPassword(t *testing.T) {
	ca := tlstest.NewCA(t, "cloud CA")
	srvCert := ca.Server(t, "cloud").TLS(t)
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		Username: "node", Password: "s3cret",
		TLS: true, TLSConfig: &tls.Config{Certificates: []tls.Certificate{srvCert}, MinVersion: tls.VersionTLS12},
		TLSTimeout: 5,
	})
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	require.True(t, ns.ReadyForConnections(10*time.Second))

	dir := t.TempDir()
	access := cloud.Access{User: "node", Password: "s3cret", CA: ca.WriteCA(t, dir, "cloud-ca.pem")}
	// The cloud's layout, as `holdfast cloud` makes it: the node's connections
	// need the config bucket and the object store too.
	nc, err := nats.Connect("tls://"+ns.Addr().String(), access.Options()...)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, cloud.EnsureLayout(t.Context(), js, cloud.LayoutOptions{}))
	nc.Close()
	_, err = nats.Connect("tls://"+ns.Addr().String(), nats.RootCAs(access.CA), nats.UserInfo("node", "wrong"))
	require.ErrorIs(t, err, nats.ErrAuthorization, "the server checks the password")

	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Mode = "off"
	cfg.Windows.Enabled = false
	cfg.Cloud.URL = "tls://" + ns.Addr().String()
	cfg.Cloud.User, cfg.Cloud.Password, cfg.Cloud.CA = "node", "s3cret", access.CA
	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer n.Close()

	resp, err := http.Post("http://"+n.HTTPAddr()+"/v1/events", "application/json",
		bytes.NewReader([]byte(`{"device_id":"d1","stream":"temp","value":1}`)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	deadline := time.Now().Add(20 * time.Second)
	for {
		st := n.syncs[0].Status()
		if st.SyncedOffset > 0 && st.LagRecords == 0 && n.backup.Status().ConfigRevision > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not synced: sink %+v, backup %+v", st, n.backup.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
