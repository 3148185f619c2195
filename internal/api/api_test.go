package api

import (
	"encoding/json"
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
