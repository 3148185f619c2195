package api

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// readRoutes are every GET route that needs a read token.
var readRoutes = []string{"/v1/events", "/v1/windows?stream=s&size=5m", "/v1/alerts", "/v1/status", "/metrics", "/"}

// TestAPIRoles: with auth on, every route but /healthz (and ingest, which
// authenticates devices itself) needs an API token: none, a malformed or
// wrong one, a revoked one → 401 with WWW-Authenticate; a device token →
// 403; read and admin tokens → 200, as the bearer or as the basic-auth
// password. Each refusal is counted under transport api.
func TestAPIRoles(t *testing.T) {
	dir := t.TempDir()
	devices, tokens := filepath.Join(dir, "devices.yaml"), filepath.Join(dir, "tokens.yaml")
	dev, err := auth.AddDevice(devices, "fridge-7", nil)
	require.NoError(t, err)
	read, err := auth.AddToken(tokens, "grafana", auth.RoleRead)
	require.NoError(t, err)
	admin, err := auth.AddToken(tokens, "ops", auth.RoleAdmin)
	require.NoError(t, err)
	old, err := auth.AddToken(tokens, "old", auth.RoleRead)
	require.NoError(t, err)
	require.NoError(t, auth.RevokeToken(tokens, "old"))
	a, err := auth.New(auth.Options{Devices: devices, Tokens: tokens})
	require.NoError(t, err)
	m := auth.NewMetrics(prometheus.NewRegistry())
	ingested := 0
	h := New(Options{
		Ingest:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ingested++ }),
		Store:    newStore(t),
		Status:   func() Status { return Status{NodeID: "n", Healthy: true} },
		Gatherer: prometheus.NewRegistry(),
		OpenWindows: func(string, string, time.Duration, int64, int64) []window.Result {
			return nil
		},
		Alerts: func(string, string) []alert.Alert { return nil },
		// A big budget: this test is not about the limiter.
		Auth: &auth.Guard{Auth: a, Limiter: auth.NewLimiter(auth.LimiterOptions{Burst: 1000}), Metrics: m, Transport: auth.TransportAPI},
	})
	get := func(path string, set func(*http.Request)) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		set(req)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	// A token one character off the read token (its last character
	// changed, whatever it is).
	wrong := read[:len(read)-1] + map[bool]string{true: "b", false: "a"}[read[len(read)-1] == 'a']
	for _, path := range readRoutes {
		for _, c := range []struct {
			name   string
			set    func(*http.Request)
			code   int
			reason string
		}{
			{"none", func(*http.Request) {}, 401, "no_credentials"},
			{"malformed", func(r *http.Request) { r.Header.Set("Authorization", "Token x") }, 401, "malformed"},
			{"wrong", bearer(wrong), 401, "unknown"},
			{"revoked", bearer(old), 401, "revoked"},
			{"device token", bearer(dev), 403, "wrong_kind"},
			{"read", bearer(read), 200, ""},
			{"admin", bearer(admin), 200, ""},
			{"basic", func(r *http.Request) { r.SetBasicAuth("", read) }, 200, ""},
			{"basic wrong", func(r *http.Request) { r.SetBasicAuth("grafana", "hft_x") }, 401, "malformed"},
		} {
			var before float64
			if c.reason != "" {
				before = testutil.ToFloat64(m.FailuresFor(auth.TransportAPI, c.reason))
			}
			rec := get(path, c.set)
			require.Equal(t, c.code, rec.Code, "%s %s: %s", path, c.name, rec.Body.String())
			if c.code == 401 {
				require.Equal(t, []string{`Bearer realm="holdfast"`, `Basic realm="holdfast", charset="UTF-8"`},
					rec.Header().Values("WWW-Authenticate"), "%s %s", path, c.name)
			}
			if c.reason != "" {
				require.Equal(t, before+1, testutil.ToFloat64(m.FailuresFor(auth.TransportAPI, c.reason)), "%s %s", path, c.name)
			}
		}
	}
	rec := get("/healthz", func(*http.Request) {})
	require.Equal(t, 200, rec.Code, "healthz needs no token")
	req := httptest.NewRequest("POST", "/v1/events", nil)
	h.ServeHTTP(httptest.NewRecorder(), req)
	require.Equal(t, 1, ingested, "ingest is left to the ingest handler's device auth")
}

// TestAPIOpenWithoutAuth: with no Guard nothing changes: every route answers
// without a token (loopback zero-config).
func TestAPIOpenWithoutAuth(t *testing.T) {
	h := New(Options{Ingest: http.NotFoundHandler(), Store: newStore(t), Gatherer: prometheus.NewRegistry(),
		Status:      func() Status { return Status{Healthy: true} },
		OpenWindows: func(string, string, time.Duration, int64, int64) []window.Result { return nil },
		Alerts:      func(string, string) []alert.Alert { return nil }})
	for _, path := range append(readRoutes, "/healthz") {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		require.Equal(t, 200, rec.Code, path)
	}
}

// TestLimitPerSource: a source with max requests in progress gets 429 with
// Retry-After for more; another source, and the same one once a request
// ends, get through.
func TestLimitPerSource(t *testing.T) {
	release := make(chan struct{})
	var started sync.WaitGroup
	h := LimitPerSource(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Done()
		<-release
	}), 2)
	serve := func(addr string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var done sync.WaitGroup
	for _, addr := range []string{"192.0.2.1:1000", "192.0.2.1:1001", "[2001:db8::1]:1", "[2001:db8::2]:1"} {
		started.Add(1)
		done.Add(1)
		go func() { defer done.Done(); serve(addr) }()
	}
	started.Wait()
	rec := serve("192.0.2.1:1002")
	require.Equal(t, 429, rec.Code)
	require.Equal(t, "1", rec.Header().Get("Retry-After"))
	rec = serve("[2001:db8::3]:9")
	require.Equal(t, 429, rec.Code, "IPv6 counts by /64")
	close(release)
	done.Wait()
	started.Add(1) // the handler's Done
	rec = serve("192.0.2.1:1003")
	require.Equal(t, 200, rec.Code)
}
