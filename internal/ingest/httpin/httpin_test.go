package httpin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
)

// memAppender stands in for the store: it records what it is given, or fails.
type memAppender struct {
	mu   sync.Mutex
	evs  []event.Event
	fail error
}

func (a *memAppender) Append(_ context.Context, evs []event.Event) (ingest.Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return ingest.Result{}, a.fail
	}
	a.evs = append(a.evs, evs...)
	return ingest.Result{Stored: len(evs)}, nil
}

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newHandler(app ingest.Appender) (*Handler, *ingest.Metrics) {
	m := ingest.NewMetrics(nil)
	return New(Options{MaxBodyBytes: 4096, Now: func() time.Time { return now }}, app, m), m
}

func do(h http.Handler, method, ct, body string) (*httptest.ResponseRecorder, Response) {
	req := httptest.NewRequest(method, "/v1/events", strings.NewReader(body))
	req.Header.Set("Content-Type", ct)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var r Response
	_ = json.Unmarshal(rec.Body.Bytes(), &r)
	return rec, r
}

func TestAcceptsTheThreeShapes(t *testing.T) {
	app := &memAppender{}
	h, m := newHandler(app)
	for name, c := range map[string]struct {
		ct, body string
		n        int
	}{
		"object": {"application/json", `{"device_id":"a","stream":"s","value":1}`, 1},
		"array":  {"application/json", `[{"device_id":"a","stream":"s","value":1},{"device_id":"b","stream":"s","value":2}]`, 2},
		"ndjson": {"application/x-ndjson", "{\"device_id\":\"a\",\"stream\":\"s\",\"value\":1}\n\n{\"device_id\":\"c\",\"stream\":\"s\",\"value\":3}\n", 2},
	} {
		rec, r := do(h, "POST", c.ct, c.body)
		require.Equal(t, 200, rec.Code, name)
		require.Equal(t, c.n, r.Accepted, name)
		require.Empty(t, r.Rejected, name)
	}
	require.Len(t, app.evs, 5)
	require.Equal(t, now.UnixMilli(), app.evs[0].TS, "missing ts defaults to the node clock")
	require.Equal(t, 5.0, testutil.ToFloat64(m.Accepted.WithLabelValues("http")))
}

func TestStorageFailureIs503AndNothingAcknowledged(t *testing.T) {
	app := &memAppender{fail: fmt.Errorf("%w: disk on fire", ingest.ErrUnavailable)}
	h, m := newHandler(app)
	rec, r := do(h, "POST", "application/json", `{"device_id":"a","stream":"s","value":1}`)
	require.Equal(t, 503, rec.Code)
	require.Equal(t, "1", rec.Header().Get("Retry-After"))
	require.Equal(t, 0, r.Accepted)
	require.Contains(t, r.Error, "disk on fire")
	require.Equal(t, 0.0, testutil.ToFloat64(m.Accepted.WithLabelValues("http")))
}

func TestAllRejectedIs400(t *testing.T) {
	h, m := newHandler(&memAppender{})
	rec, r := do(h, "POST", "application/json", `[{"stream":"s","value":1},{"device_id":"a","value":1}]`)
	require.Equal(t, 400, rec.Code)
	require.Len(t, r.Rejected, 2)
	require.Equal(t, 2.0, testutil.ToFloat64(m.Rejected.WithLabelValues("http", "missing_field")))
}

func TestWholeRequestErrors(t *testing.T) {
	h, _ := newHandler(&memAppender{})
	rec, r := do(h, "GET", "application/json", "")
	require.Equal(t, 405, rec.Code)
	require.Contains(t, r.Error, "use POST")

	rec, r = do(h, "POST", "application/json", "   \n")
	require.Equal(t, 400, rec.Code)
	require.Equal(t, "empty body", r.Error)

	rec, r = do(h, "POST", "application/json", `[`+strings.Repeat(`{"device_id":"a","stream":"s","value":1},`, 200)+`]`)
	require.Equal(t, 413, rec.Code)
	require.Contains(t, r.Error, "exceeds the limit of 4096 bytes")

	req := httptest.NewRequest("POST", "/v1/events", bytes.NewReader([]byte("not gzip")))
	req.Header.Set("Content-Encoding", "gzip")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, 400, rec.Code)
	require.Contains(t, rec.Body.String(), "gzip body")
}

func TestNDJSONContentTypes(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/x-ndjson": true, "application/x-ndjson; charset=utf-8": true, "application/jsonl": true,
		"application/json": false, "": false, "text/plain": false,
	} {
		require.Equal(t, want, isNDJSON(ct), ct)
	}
}

// Events the buffer's pressure keeps out are rejected with their index and
// the reason; a body of nothing but such events is answered 507.
func TestAdmitUnderPressure(t *testing.T) {
	app := &memAppender{}
	h := New(Options{Now: func() time.Time { return now }, Admit: func(stream string) string {
		if stream == "hvac" {
			return "refused"
		}
		return ""
	}}, app, ingest.NewMetrics(nil))
	body := `{"device_id":"a","stream":"temp","value":1}
{"device_id":"a","stream":"hvac","value":2}
{"bad":
{"device_id":"a","stream":"hvac","value":3}
{"device_id":"a","stream":"temp","value":4}
`
	req := httptest.NewRequest("POST", "/v1/events", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-ndjson")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	require.Equal(t, 200, w.Code, w.Body.String())
	var r Response
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &r))
	require.Equal(t, 2, r.Accepted)
	idx := []int{}
	for _, rj := range r.Rejected {
		idx = append(idx, rj.Index)
	}
	require.Equal(t, []int{1, 2, 3}, idx, "indexes in the body, in order: %+v", r.Rejected)
	require.Contains(t, r.Rejected[0].Error, "under pressure (refused)")

	req = httptest.NewRequest("POST", "/v1/events", strings.NewReader(`{"device_id":"a","stream":"hvac","value":2}`))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	require.Equal(t, http.StatusInsufficientStorage, w.Code, w.Body.String())
	require.Equal(t, "60", w.Header().Get("Retry-After"))
}
