package httpin

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/ingest"
)

// authFixture is a handler with device auth over a devices file holding
// fridge-7 (streams temperature and door) and fridge-8 (any stream), and a
// tokens file with a read token.
type authFixture struct {
	h                *Handler
	app              *memAppender
	m                *ingest.Metrics
	am               *auth.Metrics
	a                *auth.Authenticator
	devices          string
	tok7, tok8, read string
}

func newAuthFixture(t testing.TB) *authFixture {
	t.Helper()
	dir := t.TempDir()
	f := &authFixture{app: &memAppender{}, devices: filepath.Join(dir, "devices.yaml")}
	var err error
	f.tok7, err = auth.AddDevice(f.devices, "fridge-7", []string{"temperature", "door"})
	require.NoError(t, err)
	f.tok8, err = auth.AddDevice(f.devices, "fridge-8", nil)
	require.NoError(t, err)
	tokens := filepath.Join(dir, "tokens.yaml")
	f.read, err = auth.AddToken(tokens, "grafana", auth.RoleRead)
	require.NoError(t, err)
	f.a, err = auth.New(auth.Options{Devices: f.devices, Tokens: tokens})
	require.NoError(t, err)
	f.m = ingest.NewMetrics(nil)
	f.am = auth.NewMetrics(prometheus.NewRegistry())
	g := &auth.Guard{Auth: f.a, Limiter: auth.NewLimiter(auth.LimiterOptions{}), Metrics: f.am, Transport: auth.TransportHTTP}
	f.h = New(Options{MaxBodyBytes: 4096, Now: func() time.Time { return now }, Auth: g}, f.app, f.m)
	return f
}

func (f *authFixture) post(header, body string, tune ...func(*http.Request)) (*httptest.ResponseRecorder, Response) {
	req := httptest.NewRequest("POST", "/v1/events", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if header != "" {
		req.Header.Set("Authorization", header)
	}
	for _, fn := range tune {
		fn(req)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	var r Response
	_ = json.Unmarshal(rec.Body.Bytes(), &r)
	return rec, r
}

func (f *authFixture) failures(reason string) float64 {
	return testutil.ToFloat64(f.am.FailuresFor(auth.TransportHTTP, reason))
}

const ev7 = `{"device_id":"fridge-7","stream":"temperature","value":4}`

// TestIngestRefusesWithoutDeviceCredentials: no token, a malformed header, a
// wrong token, a revoked one → 401 with WWW-Authenticate; an API token → 403.
// Nothing reaches the store, and each refusal is counted by reason.
func TestIngestRefusesWithoutDeviceCredentials(t *testing.T) {
	f := newAuthFixture(t)
	wrong := f.tok7[:len(f.tok7)-1] + map[bool]string{true: "b", false: "a"}[strings.HasSuffix(f.tok7, "a")]
	for _, c := range []struct {
		name, header, reason string
		code                 int
	}{
		{"none", "", "no_credentials", 401},
		{"basic", "Basic " + f.tok7, "malformed", 401},
		{"garbage", "Bearer nope", "malformed", 401},
		{"wrong secret", "Bearer " + wrong, "unknown", 401},
		{"api token", "Bearer " + f.read, "wrong_kind", 403},
	} {
		before := f.failures(c.reason)
		rec, r := f.post(c.header, ev7)
		require.Equal(t, c.code, rec.Code, c.name)
		if c.code == 401 {
			require.Equal(t, `Bearer realm="holdfast"`, rec.Header().Get("WWW-Authenticate"), c.name)
		}
		require.Zero(t, r.Accepted, c.name)
		require.NotEmpty(t, r.Error, c.name)
		require.Equal(t, before+1, f.failures(c.reason), c.name)
	}
	require.NoError(t, auth.RevokeDevice(f.devices, "fridge-7"))
	require.NoError(t, f.a.Reload())
	rec, _ := f.post("Bearer "+f.tok7, ev7)
	require.Equal(t, 401, rec.Code)
	require.Equal(t, 1.0, f.failures("revoked"))
	require.Empty(t, f.app.evs, "nothing stored")
}

// TestIngestSpoofedDeviceRejectedByIndex: fridge-7's token may send only as
// fridge-7 and only its streams; the other events are rejected by index and
// the valid ones stored.
func TestIngestSpoofedDeviceRejectedByIndex(t *testing.T) {
	f := newAuthFixture(t)
	rec, r := f.post("Bearer "+f.tok7, `[`+ev7+`,
		{"device_id":"fridge-8","stream":"temperature","value":5},
		{"stream":"temperature","value":6},
		{"device_id":"fridge-7","stream":"power","value":7},
		{"device_id":"fridge-7","stream":"door","value":1}]`)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Equal(t, 2, r.Accepted)
	require.Equal(t, []Rejected{
		{1, `device_id "fridge-8": this token is for device "fridge-7"`},
		{2, r.Rejected[1].Error}, // missing device_id: the decoder's rejection, in body order
		{3, `stream "power": device "fridge-7" may not send it (its streams: [temperature door])`},
	}, r.Rejected)
	require.Contains(t, r.Rejected[1].Error, "device_id")
	require.Len(t, f.app.evs, 2)
	for _, ev := range f.app.evs {
		require.Equal(t, "fridge-7", ev.DeviceID)
	}
	require.Equal(t, 1.0, testutil.ToFloat64(f.m.Rejected.WithLabelValues("http", "wrong_device")))
	require.Equal(t, 1.0, f.failures("wrong_device"))

	// Only another device's events: 400, nothing stored.
	rec, r = f.post("Bearer "+f.tok7, `{"device_id":"fridge-8","stream":"temperature","value":5}`)
	require.Equal(t, 400, rec.Code)
	require.Zero(t, r.Accepted)
	require.Len(t, f.app.evs, 2)

	// fridge-8 (any stream) as itself.
	rec, r = f.post("bearer "+f.tok8, `{"device_id":"fridge-8","stream":"power","value":5}`)
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Equal(t, 1, r.Accepted)
}

// TestIngestRateLimitsFailures: a source that keeps failing gets 429 with
// Retry-After, even with a right token, until its budget comes back; another
// source is not affected.
func TestIngestRateLimitsFailures(t *testing.T) {
	f := newAuthFixture(t)
	for range 10 {
		rec, _ := f.post("Bearer hfd_x", ev7)
		require.Equal(t, 401, rec.Code)
	}
	rec, _ := f.post("Bearer "+f.tok7, ev7)
	require.Equal(t, 429, rec.Code)
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	rec, _ = f.post("Bearer "+f.tok7, ev7, func(r *http.Request) { r.RemoteAddr = "198.51.100.9:4000" })
	require.Equal(t, 200, rec.Code)
	require.Len(t, f.app.evs, 1)
}

// TestIngestClientCertificateNamesDevice: a verified client certificate
// whose CN (or a DNS SAN) is an active device needs no token; a header, when
// given, decides.
func TestIngestClientCertificateNamesDevice(t *testing.T) {
	f := newAuthFixture(t)
	withCert := func(cn string, dns ...string) func(*http.Request) {
		return func(r *http.Request) {
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}}}
		}
	}
	rec, r := f.post("", ev7, withCert("fridge-7"))
	require.Equal(t, 200, rec.Code, rec.Body.String())
	require.Equal(t, 1, r.Accepted)

	rec, r = f.post("", `{"device_id":"fridge-8","stream":"temperature","value":5}`, withCert("fridge-7"))
	require.Equal(t, 400, rec.Code)
	require.Equal(t, `device_id "fridge-8": this client certificate is for device "fridge-7"`, r.Rejected[0].Error)

	rec, _ = f.post("", `{"device_id":"fridge-8","stream":"x","value":5}`, withCert("gateway", "fridge-8"))
	require.Equal(t, 200, rec.Code, "a DNS SAN names the device")

	rec, _ = f.post("", ev7, withCert("stranger"))
	require.Equal(t, 401, rec.Code)
	require.Equal(t, 1.0, f.failures("unknown"))

	rec, _ = f.post("Bearer hfd_wrong", ev7, withCert("fridge-7"))
	require.Equal(t, 401, rec.Code, "the Authorization header decides")

	require.NoError(t, auth.RevokeDevice(f.devices, "fridge-7"))
	require.NoError(t, f.a.Reload())
	rec, _ = f.post("", ev7, withCert("fridge-7"))
	require.Equal(t, 401, rec.Code, "a revoked device's certificate is refused")
	require.Len(t, f.app.evs, 2)
}

// FuzzIngestAuthorization: whatever the Authorization header, the handler
// does not panic and answers 2xx only to fridge-7's own token.
func FuzzIngestAuthorization(f *testing.F) {
	fx := newAuthFixture(f)
	for _, s := range []string{
		"", "Bearer", "Bearer ", "Bearer " + fx.tok7, "bearer " + fx.tok7, "Bearer  " + fx.tok7 + " ",
		"Bearer " + fx.tok8, "Basic " + fx.tok7, "Bearer " + fx.tok7 + "x", "Bearer " + fx.read,
		"Bearer " + strings.Replace(fx.tok7, "hfd_", "hft_", 1), "Bearer " + strings.ToUpper(fx.tok7), "Bearer \x00" + fx.tok7,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		req := httptest.NewRequest("POST", "/v1/events", strings.NewReader(ev7))
		req.Header["Authorization"] = []string{header}
		req.RemoteAddr = "192.0.2.1:1" // the limiter answers 429 once the budget is spent: still not 2xx
		rec := httptest.NewRecorder()
		fx.h.ServeHTTP(rec, req)
		tok, err := auth.ParseBearer(header)
		if rec.Code/100 == 2 && (err != nil || tok != fx.tok7) {
			t.Fatalf("Authorization %q: %d", header, rec.Code)
		}
	})
}
