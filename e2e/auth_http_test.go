package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// secured is a node with security.devices and security.tokens, and the
// tokens the CLI made for it.
type secured struct {
	*proc
	dir, devices, tokens string
	fridge7, fridge8     string // device tokens
	read, admin          string // API tokens
	scheme               string
	client               *http.Client
}

// startSecured makes fridge-7 (streams temperature, door) and fridge-8 with
// `holdfast device add`, read and admin tokens with `holdfast token add`, and
// starts a node on them; extra is more YAML for the config.
func startSecured(t *testing.T, extra string, args ...string) *secured {
	t.Helper()
	s := &secured{dir: t.TempDir(), scheme: "http", client: spreadClient(nil)}
	s.devices, s.tokens = filepath.Join(s.dir, "devices.yaml"), filepath.Join(s.dir, "tokens.yaml")
	add := func(args ...string) string {
		out, _ := holdfastIn(t, s.dir, args...)
		return strings.TrimSpace(out)
	}
	s.fridge7 = add("device", "add", "fridge-7", "--devices", s.devices, "--streams", "temperature,door")
	s.fridge8 = add("device", "add", "fridge-8", "--devices", s.devices)
	s.read = add("token", "add", "grafana", "--role", "read", "--tokens", s.tokens)
	s.admin = add("token", "add", "ops", "--role", "admin", "--tokens", s.tokens)
	cfg := filepath.Join(s.dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf("security:\n  devices: %s\n  tokens: %s\n%s", s.devices, s.tokens, extra))
	s.proc = start(t, filepath.Join(s.dir, "data"), append([]string{"--config", cfg}, args...)...)
	return s
}

// do sends a request with token as the bearer ("": none) and returns the
// status, the body and the headers.
func (s *secured) do(t *testing.T, method, path, token, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, s.scheme+"://"+s.httpAddr+path, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header
}

// nextOffset is the log's next offset, read with the admin token.
func (s *secured) nextOffset(t *testing.T) uint64 {
	t.Helper()
	code, body, _ := s.do(t, "GET", "/v1/status", s.admin, "")
	require.Equal(t, 200, code, body)
	var st struct {
		Buffer struct {
			NextOffset uint64 `json:"next_offset"`
		} `json:"buffer"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	return st.Buffer.NextOffset
}

// failures is holdfast_auth_failures_total{transport,reason} from /metrics.
func (s *secured) failures(t *testing.T, transport, reason string) float64 {
	t.Helper()
	code, body, _ := s.do(t, "GET", "/metrics", s.admin, "")
	require.Equal(t, 200, code)
	want := fmt.Sprintf(`holdfast_auth_failures_total{reason=%q,transport=%q} `, reason, transport)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	return 0
}

var nextSource atomic.Uint32

// spreadClient connects from a new loopback address (127.0.0.2–127.0.0.251)
// for every request: the node throttles failed authentications per source,
// and these tests fail on purpose far more often than its budget of 10.
func spreadClient(tc *tls.Config) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+nextSource.Add(1)%250))}
		return (&net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: dial, TLSClientConfig: tc, DisableKeepAlives: true,
	}}
}

const (
	fridge7Event = `{"device_id":"fridge-7","stream":"temperature","value":4.5}`
	fridge8Event = `{"device_id":"fridge-8","stream":"temperature","value":9}`
)

// TestHTTPAuthEveryRoute goes through every HTTP route with no credentials,
// a wrong token, the wrong kind of token and the right one. Each refusal
// leaves the log's next offset where it was and counts under
// holdfast_auth_failures_total: transport http for ingest, api for the rest.
func TestHTTPAuthEveryRoute(t *testing.T) {
	s := startSecured(t, "")
	wrongDevice := s.fridge7[:len(s.fridge7)-4] + "aaaa"
	wrongAPI := s.read[:len(s.read)-4] + "aaaa"
	reads := []string{"/v1/events", "/v1/windows?stream=temperature&size=1m", "/v1/alerts", "/v1/status", "/metrics", "/"}

	refused := func(method, path, token, body string, code int, transport, reason string) {
		t.Helper()
		before, count := s.nextOffset(t), s.failures(t, transport, reason)
		got, resp, hdr := s.do(t, method, path, token, body)
		require.Equal(t, code, got, "%s %s: %s", method, path, resp)
		if code == 401 {
			require.Contains(t, hdr.Get("WWW-Authenticate"), "Bearer", "%s %s", method, path)
		}
		require.Equal(t, before, s.nextOffset(t), "%s %s: nothing reached the log", method, path)
		require.Equal(t, count+1, s.failures(t, transport, reason), "%s %s: counted as %s", method, path, reason)
	}
	// Ingest.
	refused("POST", "/v1/events", "", fridge7Event, 401, "http", "no_credentials")
	refused("POST", "/v1/events", wrongDevice, fridge7Event, 401, "http", "unknown")
	refused("POST", "/v1/events", s.read, fridge7Event, 403, "http", "wrong_kind")
	refused("POST", "/v1/events", s.admin, fridge7Event, 403, "http", "wrong_kind")
	before := s.nextOffset(t)
	code, body, _ := s.do(t, "POST", "/v1/events", s.fridge7, fridge7Event)
	require.Equal(t, 200, code, body)
	require.Equal(t, before+1, s.nextOffset(t))

	// Reads.
	for _, path := range reads {
		refused("GET", path, "", "", 401, "api", "no_credentials")
		refused("GET", path, wrongAPI, "", 401, "api", "unknown")
		refused("GET", path, s.fridge7, "", 403, "api", "wrong_kind")
		for _, tok := range []string{s.read, s.admin} {
			code, body, _ := s.do(t, "GET", path, tok, "")
			require.Equal(t, 200, code, "%s: %s", path, body)
		}
	}
	code, _, _ = s.do(t, "GET", "/healthz", "", "")
	require.Equal(t, 200, code, "/healthz needs no token")

	// The status page in a browser: basic auth with the token as password.
	req, _ := http.NewRequest("GET", "http://"+s.httpAddr+"/", nil)
	req.SetBasicAuth("", s.read)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)

	// holdfast status: --token, $HOLDFAST_TOKEN, --token-file.
	out, err := exec.Command(binary, "status", "--addr", s.httpAddr).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "--token")
	tokenFile := filepath.Join(s.dir, "read.token")
	writeFile(t, tokenFile, s.read+"\n")
	for _, c := range [][]string{{"--token", s.read}, {"--token-file", tokenFile}, {"--token", s.read, "--token-file", "/nonexistent"}} {
		out, err := exec.Command(binary, append([]string{"status", "--addr", s.httpAddr}, c...)...).CombinedOutput()
		require.NoError(t, err, "%v: %s", c, out)
		require.Contains(t, string(out), "Buffer  ")
	}
	cmd := exec.Command(binary, "status", "--addr", s.httpAddr, "--token-file", "/nonexistent")
	cmd.Env = append(cmd.Environ(), "HOLDFAST_TOKEN="+s.read)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "$HOLDFAST_TOKEN before --token-file: %s", out)
}

// TestHTTPAuthSpoofedDevice: fridge-7's token posting an event as fridge-8
// gets it rejected by index, not stored; fridge-7's own event in the same
// batch is stored.
func TestHTTPAuthSpoofedDevice(t *testing.T) {
	s := startSecured(t, "")
	before := s.nextOffset(t)
	code, body, _ := s.do(t, "POST", "/v1/events", s.fridge7, "["+fridge7Event+","+fridge8Event+"]")
	require.Equal(t, 200, code, body)
	var r struct {
		Accepted int `json:"accepted"`
		Rejected []struct {
			Index int    `json:"index"`
			Error string `json:"error"`
		} `json:"rejected"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &r))
	require.Equal(t, 1, r.Accepted)
	require.Len(t, r.Rejected, 1)
	require.Equal(t, 1, r.Rejected[0].Index)
	require.Equal(t, `device_id "fridge-8": this token is for device "fridge-7"`, r.Rejected[0].Error)
	require.Equal(t, before+1, s.nextOffset(t), "only fridge-7's event reached the log")
	require.Equal(t, 1.0, s.failures(t, "http", "wrong_device"))

	code, body, _ = s.do(t, "GET", "/v1/events?device_id=fridge-8", s.read, "")
	require.Equal(t, 200, code)
	require.JSONEq(t, `{"events":[]}`, body)

	code, _, _ = s.do(t, "POST", "/v1/events", s.fridge7, fridge8Event)
	require.Equal(t, 400, code, "nothing but another device's events")
	require.Equal(t, before+1, s.nextOffset(t))
}

// TestHTTPAuthRevokeAndAddWhileRunning: `holdfast device revoke` and `device
// add` on the running node's files take effect without a restart (the file
// watch); so does `token revoke`, and SIGHUP reloads at once.
func TestHTTPAuthRevokeAndAddWhileRunning(t *testing.T) {
	t.Parallel()
	s := startSecured(t, "")
	code, _, _ := s.do(t, "POST", "/v1/events", s.fridge8, fridge8Event)
	require.Equal(t, 200, code)

	holdfastIn(t, s.dir, "device", "revoke", "fridge-8", "--devices", s.devices)
	waitFor(t, "fridge-8's token refused", 20*time.Second, func() bool {
		code, _, _ := s.do(t, "POST", "/v1/events", s.fridge8, fridge8Event)
		return code == 401
	})
	before, revoked := s.nextOffset(t), s.failures(t, "http", "revoked")
	code, _, hdr := s.do(t, "POST", "/v1/events", s.fridge8, fridge8Event)
	require.Equal(t, 401, code)
	require.Contains(t, hdr.Get("WWW-Authenticate"), "Bearer")
	require.Equal(t, before, s.nextOffset(t))
	require.Equal(t, revoked+1, s.failures(t, "http", "revoked"))

	out, _ := holdfastIn(t, s.dir, "device", "add", "fridge-9", "--devices", s.devices)
	fridge9 := strings.TrimSpace(out)
	waitFor(t, "fridge-9 may ingest", 20*time.Second, func() bool {
		code, _, _ := s.do(t, "POST", "/v1/events", fridge9, `{"device_id":"fridge-9","stream":"door","value":1}`)
		return code == 200
	})

	// SIGHUP: the read token revoked, then refused right after the signal.
	holdfastIn(t, s.dir, "token", "revoke", "grafana", "--tokens", s.tokens)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGHUP))
	waitFor(t, "the reload in the log", 10*time.Second, func() bool {
		return strings.Contains(s.logs(), "credentials reloaded on SIGHUP")
	})
	waitFor(t, "the read token refused", 10*time.Second, func() bool {
		code, _, _ := s.do(t, "GET", "/v1/status", s.read, "")
		return code == 401
	})
	require.GreaterOrEqual(t, s.failures(t, "api", "revoked"), 1.0)
}

// TestInsecureListenRefused: a non-loopback listener without authentication
// is a start-up error naming the fixes; --insecure starts with a warning.
func TestInsecureListenRefused(t *testing.T) {
	dir := t.TempDir()
	// A node that starts instead of refusing is killed after 30 s: the test
	// fails rather than hangs.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "run", "--data-dir", filepath.Join(dir, "a"), "--http-addr", "0.0.0.0:0",
		"--mqtt-addr", "127.0.0.1:0").CombinedOutput()
	require.Error(t, err, "%s", out)
	require.NoError(t, ctx.Err(), "the node started instead of refusing")
	for _, want := range []string{"http.addr 0.0.0.0:0", "security.devices", "security.tokens", "--insecure"} {
		require.Contains(t, string(out), want)
	}
	out, err = exec.CommandContext(ctx, binary, "run", "--data-dir", filepath.Join(dir, "b"), "--mqtt-addr", "0.0.0.0:0").CombinedOutput()
	require.Error(t, err, "%s", out)
	require.Contains(t, string(out), "mqtt.addr 0.0.0.0:0")

	p := start(t, filepath.Join(dir, "c"), "--http-addr", "0.0.0.0:0", "--insecure")
	require.Contains(t, p.logs(), "INSECURE")
	p.stop(t)
}

// TestHTTPSClientCertificateDevice: over HTTPS with security.tls.client_ca,
// a client certificate whose CN is an active device ingests with no token,
// as that device only; a certificate of a device not in the file, and no
// certificate and no token, are refused.
func TestHTTPSClientCertificateDevice(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "site CA")
	cert, key := ca.Server(t, "edge").Write(t, dir, "server")
	s := startSecured(t, fmt.Sprintf("  tls: {cert: %s, key: %s, client_ca: %s}\n", cert, key, ca.WriteCA(t, dir, "ca.pem")))
	s.scheme = "https"
	as := func(cn string) *http.Client {
		tc := &tls.Config{RootCAs: ca.Pool()}
		if cn != "" {
			tc.Certificates = []tls.Certificate{ca.Client(t, cn).TLS(t)}
		}
		return spreadClient(tc)
	}
	s.client = as("")
	before := s.nextOffset(t)

	s.client = as("fridge-7")
	code, body, _ := s.do(t, "POST", "/v1/events", "", "["+fridge7Event+","+fridge8Event+"]")
	require.Equal(t, 200, code, body)
	require.Contains(t, body, `this client certificate is for device \"fridge-7\"`)

	s.client = as("stranger")
	code, _, _ = s.do(t, "POST", "/v1/events", "", fridge7Event)
	require.Equal(t, 401, code)

	s.client = as("")
	code, _, _ = s.do(t, "POST", "/v1/events", "", fridge7Event)
	require.Equal(t, 401, code)
	code, _, _ = s.do(t, "POST", "/v1/events", s.fridge8, fridge8Event)
	require.Equal(t, 200, code, "a token over HTTPS without a certificate")
	require.Equal(t, before+2, s.nextOffset(t))
	require.Equal(t, 1.0, s.failures(t, "http", "unknown"))
}

// TestHTTPAuthRateLimited: one source address that fails 10 times is
// answered 429 with Retry-After, even with a good token, and counted;
// another address is not affected.
func TestHTTPAuthRateLimited(t *testing.T) {
	s := startSecured(t, "")
	one := s.client
	s.client = &http.Client{Timeout: 10 * time.Second} // always from 127.0.0.1
	for range 10 {
		code, _, _ := s.do(t, "POST", "/v1/events", "hfd_guess", fridge7Event)
		require.Equal(t, 401, code)
	}
	code, _, hdr := s.do(t, "POST", "/v1/events", s.fridge7, fridge7Event)
	require.Equal(t, 429, code)
	require.NotEmpty(t, hdr.Get("Retry-After"))
	code, _, _ = s.do(t, "GET", "/v1/status", s.read, "")
	require.Equal(t, 429, code, "the API shares the source's budget")

	s.client = one
	code, _, _ = s.do(t, "POST", "/v1/events", s.fridge7, fridge7Event)
	require.Equal(t, 200, code, "another address")
	code, body, _ := s.do(t, "GET", "/metrics", s.admin, "")
	require.Equal(t, 200, code)
	require.Contains(t, body, `holdfast_auth_rate_limited_total{transport="http"} 1`)
	require.Contains(t, body, `holdfast_auth_rate_limited_total{transport="api"} 1`)
	require.Equal(t, 10.0, s.failures(t, "http", "malformed"))
}
