package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/window"
)

func TestQueriesRejectMistakes(t *testing.T) {
	h := New(Options{Ingest: http.NotFoundHandler(), Gatherer: prometheus.NewRegistry(), Store: newStore(t),
		OpenWindows: func(string, string, time.Duration, int64, int64) []window.Result { return nil },
		Alerts:      func(string, string) []alert.Alert { return nil },
		WindowSizes: []time.Duration{time.Minute, 5 * time.Minute, time.Hour},
	})
	for _, c := range []struct {
		url  string
		code int
		err  string
	}{
		{"/v1/events?devce_id=d1", 400, "unknown parameter devce_id (did you mean device_id?); /v1/events takes device_id, stream, from, to, limit, cursor"},
		{"/v1/events?device_id=d1&stream=t&from=0&to=1&limit=5", 200, ""},
		{"/v1/windows?devce_id=d1&size=1m", 400, "unknown parameter devce_id (did you mean device_id?); /v1/windows takes stream, device_id, size, from, to, limit, cursor, scope"},
		{"/v1/windows?zzz=1&yyy=2", 400, "unknown parameter yyy and 1 more; /v1/windows takes stream, device_id, size, from, to, limit, cursor, scope"},
		{"/v1/windows?size=2m", 400, `size: "2m" is not a configured window size; the sizes are 1m0s, 5m0s, 1h0m0s (windows.sizes)`},
		{"/v1/windows?size=60s", 200, ""},
		{"/v1/windows?stream=t&device_id=*&size=5m&from=0&to=1&limit=5&scope=node", 200, ""},
		{"/v1/alerts?sate=firing", 400, "unknown parameter sate (did you mean state?); /v1/alerts takes state, severity"},
		{"/v1/alerts?state=firing&severity=critical", 200, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", c.url, nil))
		require.Equal(t, c.code, rec.Code, "%s: %s", c.url, rec.Body)
		if c.err != "" {
			var body map[string]string
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			require.Equal(t, c.err, body["error"], c.url)
		}
	}
}

func TestAnySizeWithoutConfiguredSizes(t *testing.T) {
	h := New(Options{Ingest: http.NotFoundHandler(), Gatherer: prometheus.NewRegistry(), Store: newStore(t)})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/windows?size=2m", nil))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
}
