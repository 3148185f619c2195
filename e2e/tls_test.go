package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// TestTLSReloadOnSIGHUP serves HTTPS and MQTT over TLS, replaces the
// certificate files and sends SIGHUP: a new connection gets the new
// certificate while a keep-alive connection made before, HTTP and MQTT,
// stays up.
func TestTLSReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "site CA")
	cert, key := ca.Server(t, "first").Write(t, dir, "server")
	cfg := filepath.Join(dir, "holdfast.yaml")
	// client_ca turns authentication on: `holdfast status` needs a token.
	tokens := filepath.Join(dir, "tokens.yaml")
	readToken, _ := holdfastIn(t, dir, "token", "add", "status", "--role", "read", "--tokens", tokens)
	writeFile(t, cfg, fmt.Sprintf("security:\n  tokens: %s\n  tls: {cert: %s, key: %s, client_ca: %s}\n",
		tokens, cert, key, ca.WriteCA(t, dir, "client-ca.pem")))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg)

	// served GETs /healthz on c and returns the certificate's common name and
	// whether an idle connection was reused.
	served := func(c *http.Client) (string, bool) {
		t.Helper()
		reused := false
		req, err := http.NewRequest("GET", "https://"+p.httpAddr+"/healthz", nil)
		require.NoError(t, err)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}))
		resp, err := c.Do(req)
		require.NoError(t, err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
		return resp.TLS.PeerCertificates[0].Subject.CommonName, reused
	}
	client := func() *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, IdleConnTimeout: time.Minute}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	old := client()
	cn, _ := served(old)
	require.Equal(t, "first", cn)

	mq := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + p.mqttAddr).SetClientID("before-reload").
		// client_ca: the broker takes a device by its certificate (or token).
		SetTLSConfig(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{ca.Client(t, "d1").TLS(t)}}).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	tok := mq.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	defer mq.Disconnect(100)

	ca.Server(t, "second").Write(t, dir, "server")
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	waitFor(t, "the reload in the log", 10*time.Second, func() bool {
		return strings.Contains(p.logs(), "TLS files reloaded")
	})

	cn, reused := served(client())
	require.Equal(t, "second", cn, "a new connection gets the new certificate")
	require.False(t, reused)
	cn, reused = served(old)
	require.True(t, reused, "the keep-alive connection stayed up")
	require.Equal(t, "first", cn)

	tok = mq.Publish("devices/d1/temp", 1, false, "21.5")
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error(), "the MQTT connection made before the reload still publishes")
	require.True(t, mq.IsConnectionOpen())
	conn, err := tls.Dial("tcp", p.mqttAddr, &tls.Config{RootCAs: ca.Pool()})
	require.NoError(t, err)
	require.Equal(t, "second", conn.ConnectionState().PeerCertificates[0].Subject.CommonName, "MQTT: the new certificate")
	conn.Close()

	out, err := exec.Command(binary, "status", "--addr", p.httpAddr, "--ca", filepath.Join(dir, "client-ca.pem"),
		"--token", strings.TrimSpace(readToken)).CombinedOutput()
	require.NoError(t, err, "holdfast status over HTTPS: %s", out)

	p.stop(t)
}

// TestSyncAndRecoverOverTLS syncs to a cloud that requires TLS and a user and
// password, then rebuilds the node with `holdfast recover --config`, which
// reaches the cloud with the config file's cloud: section.
func TestSyncAndRecoverOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "cloud CA")
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "cloud"), NoSigs: true,
		Username: "edge", Password: "s3cret", TLS: true, TLSTimeout: 5,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "cloud").TLS(t)}, MinVersion: tls.VersionTLS12},
	})
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	require.True(t, ns.ReadyForConnections(10*time.Second))
	url := "tls://" + ns.Addr().String()
	access := cloud.Access{User: "edge", Password: "s3cret", CA: ca.WriteCA(t, dir, "cloud-ca.pem")}

	// The layout `holdfast cloud` makes, over the same TLS and credentials.
	nc, err := nats.Connect(url, access.Options()...)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.NoError(t, cloud.EnsureLayout(t.Context(), js, cloud.LayoutOptions{}))
	waitFor(t, "the config archive to source the registry", 10*time.Second, func() bool {
		st, err := js.Stream(t.Context(), cloud.StreamConfig)
		return err == nil && len(st.CachedInfo().Sources) > 0 && st.CachedInfo().Sources[0].Active >= 0
	})
	nc.Close()

	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
node_id: tls-edge
windows: {enabled: false}
cloud: {url: %s, user: edge, password: s3cret, ca: %s, max_delay: 10ms}
`, url, access.CA))
	p := start(t, filepath.Join(dir, "a"), "--config", cfg)
	for i := range 3 {
		resp, err := http.Post(p.url("/v1/events"), "application/json",
			strings.NewReader(fmt.Sprintf(`{"device_id":"d1","stream":"temp","value":%d}`, i)))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
	}
	waitFor(t, "the events synced and the config published", 20*time.Second, func() bool {
		st := get(t, p, "/v1/status")
		return strings.Contains(st, `"lag_records":0`) && strings.Contains(st, `"synced_offset":3`) &&
			!strings.Contains(st, `"config_revision":0`)
	})
	p.kill()

	out, err := exec.Command(binary, "recover", "--from-cloud", "--node-id", "tls-edge", "--cloud-url", url,
		"--data-dir", filepath.Join(dir, "b")).CombinedOutput()
	require.Error(t, err, "without the cloud's CA and password: %s", out)

	out, err = exec.Command(binary, "recover", "--from-cloud", "--node-id", "tls-edge", "--config", cfg,
		"--data-dir", filepath.Join(dir, "c")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "validation  passed")
	require.Contains(t, string(out), "events 3", "the three events, fetched over TLS")
	require.Contains(t, string(out), "config      revision 1", "the config, from the registry")
}
