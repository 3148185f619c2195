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
	"github.com/stretchr/testify/require"

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
	writeFile(t, cfg, fmt.Sprintf("security:\n  tls: {cert: %s, key: %s, client_ca: %s}\n",
		cert, key, ca.WriteCA(t, dir, "client-ca.pem")))
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
		SetTLSConfig(&tls.Config{RootCAs: ca.Pool()}).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
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

	out, err := exec.Command(binary, "status", "--addr", p.httpAddr, "--ca", filepath.Join(dir, "client-ca.pem")).CombinedOutput()
	require.NoError(t, err, "holdfast status over HTTPS: %s", out)

	p.stop(t)
}
