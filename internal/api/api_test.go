package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/peerwindows"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: vfs.NewMem()})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	s, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	return s
}

func getWindows(t *testing.T, h http.Handler) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/windows?stream=huge&size=5m", nil))
	body, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	return rec.Code, body
}

// TestWindowsAnswerIsWholeJSON is issue 11: an open window with an infinite
// sum made GET /v1/windows answer 200 with an empty body. Results are finite
// now (window.Result); should one not be, the answer is a whole 500, never a
// 200 cut off halfway. A saturated sum is shown with "overflow": true.
func TestWindowsAnswerIsWholeJSON(t *testing.T) {
	res := window.Result{Stream: "huge", Size: 5 * time.Minute, End: 300_000, Count: 2,
		Sum: math.MaxFloat64, Overflow: true, Min: 1.7e308, Max: 1.7e308, Mean: 1.7e308, Last: 1.7e308,
		P50: 1.7e308, P95: 1.7e308, P99: 1.7e308}
	h := New(Options{Ingest: http.NotFoundHandler(), Gatherer: prometheus.NewRegistry(), Store: newStore(t), OpenWindows: func(string, string, time.Duration, int64, int64) []window.Result {
		return []window.Result{res}
	}})
	code, body := getWindows(t, h)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var got struct {
		Windows []map[string]any `json:"windows"`
	}
	require.NoError(t, json.Unmarshal(body, &got), "%s", body)
	require.Len(t, got.Windows, 1)
	require.Equal(t, true, got.Windows[0]["overflow"])
	require.Equal(t, math.MaxFloat64, got.Windows[0]["sum"])
	require.Equal(t, 1.7e308, got.Windows[0]["mean"])

	res.Sum, res.Overflow, res.Mean = math.Inf(1), false, math.Inf(1)
	code, body = getWindows(t, h)
	require.True(t, json.Valid(body), "a whole JSON answer, not %q", body)
	require.Equal(t, http.StatusInternalServerError, code, "%s", body)
	require.Contains(t, string(body), "unsupported value")
}

// TestSiteWindowsWithoutPeer: in a pair, GET /v1/windows answers the site;
// a failing peer leaves this node's windows, marked partial, with status
// 200; scope=node is the node's own answer; bad scopes and cursors are 400.
func TestSiteWindowsWithoutPeer(t *testing.T) {
	k := window.Key{Stream: "temp", DeviceID: "d1", Size: time.Minute, Start: 120_000}
	p := window.NewPartial(k, window.DefaultAccuracy)
	p.Add(k.Start+5, 3)
	p.Add(k.Start+6, 1)
	peerErr := errors.New("peer: no answer")
	var asked peerwindows.Query
	h := New(Options{Ingest: http.NotFoundHandler(), Gatherer: prometheus.NewRegistry(), Store: newStore(t),
		OpenWindows:  func(string, string, time.Duration, int64, int64) []window.Result { return nil },
		OpenPartials: func(string, string, time.Duration, int64, int64) []window.Partial { return []window.Partial{*p} },
		Peer: func(ctx context.Context, q peerwindows.Query) (peerwindows.Page, error) {
			asked = q
			return peerwindows.Page{}, peerErr
		}})
	get := func(query string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/windows?"+query, nil))
		var body map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), rec.Body.String())
		return rec.Code, body
	}
	code, body := get("stream=temp&device_id=*&limit=5&from=60000")
	require.Equal(t, http.StatusOK, code, "%v", body)
	require.Equal(t, true, body["partial"])
	require.Equal(t, "peer: no answer", body["peer_error"])
	require.Equal(t, "site", body["scope"])
	ws := body["windows"].([]any)
	require.Len(t, ws, 1)
	w := ws[0].(map[string]any)
	require.Equal(t, "temp/d1/60000/120000", w["id"])
	require.Equal(t, 4.0, w["sum"])
	require.Equal(t, 1.0, w["last"])
	require.Equal(t, false, w["final"])
	require.Equal(t, peerwindows.Query{Stream: "temp", DeviceID: "*", From: 60_000, To: math.MaxInt64, Limit: 5}, asked)

	code, body = get("stream=temp&device_id=*&scope=node")
	require.Equal(t, http.StatusOK, code)
	require.NotContains(t, body, "scope")
	require.NotContains(t, body, "partial")

	for _, q := range []string{"scope=everywhere", "cursor=12", "cursor=w.!!", "limit=0"} {
		code, body = get(q)
		require.Equal(t, http.StatusBadRequest, code, "%s: %v", q, body)
	}
}
