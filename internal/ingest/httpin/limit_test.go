package httpin

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/ingest/ratelimit"
)

func ndjson(devices ...string) string {
	var b strings.Builder
	for i, d := range devices {
		fmt.Fprintf(&b, `{"device_id":%q,"stream":"temp","value":%d}`+"\n", d, i)
	}
	return b.String()
}

// TestRateLimitPerIndex: in a batch of several devices, the events over
// their device's limit are rejected by index, naming the device and the
// limit, and the rest stored with 200; a request whose events were all over
// the limit gets 429 and a Retry-After of whole seconds, and nothing stored.
func TestRateLimitPerIndex(t *testing.T) {
	app := &memAppender{}
	lim := ratelimit.New(ratelimit.Options{Rate: 0.5, Burst: 2})
	m := ingest.NewMetrics(nil)
	h := New(Options{MaxBodyBytes: 1 << 20, Now: func() time.Time { return now }, Limiter: lim}, app, m)

	rec, resp := do(h, http.MethodPost, "application/x-ndjson", ndjson("flood", "calm", "flood", "flood", "flood", "calm"))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, 4, resp.Accepted)
	require.Len(t, resp.Rejected, 2)
	require.Equal(t, []int{3, 4}, []int{resp.Rejected[0].Index, resp.Rejected[1].Index})
	require.Contains(t, resp.Rejected[0].Error, `device "flood": over its rate limit of 0.5 events/s (burst 2)`)
	require.Equal(t, "2", rec.Header().Get("Retry-After"), "a token every 2 s")
	require.Len(t, app.evs, 4)

	rec, resp = do(h, http.MethodPost, "application/x-ndjson", ndjson("flood", "flood"))
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, "2", rec.Header().Get("Retry-After"))
	require.Zero(t, resp.Accepted)
	require.Contains(t, resp.Error, `device "flood" over its rate limit of 0.5 events/s (burst 2): 2 events not stored`)
	require.Len(t, app.evs, 4)
	require.Equal(t, 4.0, testutil.ToFloat64(m.Rejected.WithLabelValues("http", ReasonRateLimited)))

	// Invalid events beside the limited ones: nothing stored, still 429,
	// the invalid one rejected by its index in order.
	rec, resp = do(h, http.MethodPost, "application/x-ndjson", ndjson("flood")+"{bad\n")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, []int{0, 1}, []int{resp.Rejected[0].Index, resp.Rejected[1].Index})

	// Another device is unaffected.
	rec, _ = do(h, http.MethodPost, "application/x-ndjson", ndjson("other", "other"))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Empty(t, rec.Header().Get("Retry-After"))
}
