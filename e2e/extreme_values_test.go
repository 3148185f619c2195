package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// getWindows answers GET /v1/windows?query, requiring a whole JSON 200 answer
// whose every window is sane: finite aggregates, quantiles and mean within
// [min, max], a saturated sum exactly when overflow is set.
func getWindows(t *testing.T, p *proc, query string) []testutil.WindowJSON {
	t.Helper()
	resp, err := http.Get(p.url("/v1/windows?limit=10000&" + query))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET /v1/windows?%s: %s", query, body)
	var page struct {
		Windows []testutil.WindowJSON `json:"windows"`
	}
	require.NoError(t, json.Unmarshal(body, &page), "GET /v1/windows?%s answered %q", query, body)
	for _, w := range page.Windows {
		require.True(t, w.Min <= w.P50 && w.P50 <= w.P95 && w.P95 <= w.P99 && w.P99 <= w.Max, "%+v", w)
		require.True(t, w.Min <= w.Mean && w.Mean <= w.Max, "%+v", w)
		require.Equal(t, w.Overflow, math.Abs(w.Sum) == math.MaxFloat64, "%+v", w)
	}
	return page.Windows
}

// TestExtremeValuesEndToEnd is issue 11 against the real binary: one device
// sending 1.7e308 twice and −1.7e308 once made the window sum +Inf, the open
// window's query a 200 with an empty body and, once the window closed, every
// window query fail, for every stream, across restarts, with the broken
// record synced to the cloud. Now the sums saturate with "overflow": true and
// an exact mean, and the other streams never notice: while the windows are
// open, once they have closed, after a restart, and in the cloud.
func TestExtremeValuesEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := localCloud(t, dir)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, `
windows:
  sizes: [1m, 5m]
  idle_timeout: 4s
checkpoints:
  interval: 1s
  snapshot_interval: 1s
alerts:
  rules:
    - {name: huge-sum, stream: huge, source: window, window: 1m, aggregate: sum, op: ">", threshold: 1e308}
    - {name: huge-p99, stream: huge, source: window, window: 5m, aggregate: p99, op: ">", threshold: 1e308, site_wide: true}
cloud:
  url: `+srv.URL()+"\n")
	data := filepath.Join(dir, "data")
	p := start(t, data, "--config", cfg, "--node-id", "site-x")

	// Event times an hour back, so that the idle timeout closes every window.
	b5 := time.Now().Add(-time.Hour).Truncate(5 * time.Minute).UnixMilli()
	type sent struct {
		device, stream string
		at             int64 // ms after b5
		value          string
	}
	evs := []sent{
		{"big", "huge", 10_000, "1.7e308"}, {"big", "huge", 11_000, "1.7e308"}, {"big", "huge", 12_000, "-1.7e308"},
		{"big", "huge", 70_000, "1.7e308"}, {"big", "huge", 71_000, "1.7e308"},
		{"e", "edge", 10_000, "5e-324"}, {"e", "edge", 11_000, "-0"}, {"e", "edge", 12_000, "1e-310"},
		{"e", "edge", 13_000, "8.9e307"}, {"e", "edge", 14_000, "8.9e307"}, {"e", "edge", 15_000, "-1.7976931348623157e308"},
		{"e", "edge", 16_000, "1e308"}, {"e", "edge", 17_000, "1.7976931348623157e308"}, {"e", "edge", 18_000, "2.2250738585072014e-308"},
		{"d1", "temp", 10_000, "20"}, {"d1", "temp", 20_000, "21"}, {"d1", "temp", 30_000, "22"},
	}
	var body bytes.Buffer
	for _, e := range evs {
		fmt.Fprintf(&body, `{"device_id":%q,"stream":%q,"ts":%d,"value":%s}`+"\n", e.device, e.stream, b5+e.at, e.value)
	}
	code, r := post(t, p, "application/x-ndjson", "", body.Bytes())
	require.Equal(t, 200, code, "%+v", r)
	require.Equal(t, len(evs), r.Accepted, "%+v", r)

	// While the windows are open.
	waitFor(t, "the open windows", 10*time.Second, func() bool {
		ws := getWindows(t, p, "stream=huge&size=5m")
		return len(ws) == 1 && ws[0].Count == 5
	})
	huge5 := getWindows(t, p, "stream=huge&size=5m")[0]
	require.False(t, huge5.Final)
	require.True(t, huge5.Overflow)
	require.Equal(t, math.MaxFloat64, huge5.Sum)
	require.InEpsilon(t, 3*1.7e308/5, huge5.Mean, 1e-15)
	require.Equal(t, -1.7e308, huge5.Min)
	require.Equal(t, 1.7e308, huge5.Max)
	checkHuge1m := func(ws []testutil.WindowJSON, final bool) {
		t.Helper()
		require.Len(t, ws, 2)
		for _, w := range ws {
			require.Equal(t, final, w.Final)
		}
		a, b := ws[len(ws)-1], ws[0] // most recent first
		if !final {
			a, b = ws[0], ws[1] // open ones in close order: earliest end first
		}
		require.Equal(t, uint64(3), a.Count)
		require.False(t, a.Overflow)
		require.Equal(t, 1.7e308, a.Sum, "exact")
		require.Equal(t, 1.7e308/3, a.Mean)
		require.Equal(t, uint64(2), b.Count)
		require.True(t, b.Overflow)
		require.Equal(t, 1.7e308, b.Mean)
	}
	checkHuge1m(getWindows(t, p, "stream=huge&size=1m"), false)
	temp := getWindows(t, p, "stream=temp&size=1m")
	require.Len(t, temp, 1)
	require.Equal(t, 21.0, temp[0].Mean)
	require.Equal(t, 63.0, temp[0].Sum)
	edge := getWindows(t, p, "stream=edge&device_id=*")
	require.Len(t, edge, 4)
	for _, w := range edge {
		require.Equal(t, uint64(9), w.Count)
		require.True(t, w.Overflow, "the sum passed MaxFloat64 at the end: %+v", w)
	}

	// Once the idle timeout has closed them: every query, with or without a
	// stream, answers, and the huge stream's results are the ones shown open.
	final := func() int {
		n := 0
		for _, w := range getWindows(t, p, "device_id=*") {
			if w.Final {
				n++
			}
		}
		return n
	}
	waitFor(t, "the windows to close", 30*time.Second, func() bool { return final() == 14 })
	all := getWindows(t, p, "size=1m")
	require.Len(t, all, 4, "the site-wide 1m windows of every stream")
	checkHuge1m(getWindows(t, p, "stream=huge&size=1m"), true)
	closed5 := getWindows(t, p, "stream=huge&size=5m")
	require.Len(t, closed5, 1)
	huge5.Final = true
	huge5.ID = closed5[0].ID
	require.Equal(t, huge5, closed5[0])
	require.Contains(t, get(t, p, "/v1/alerts"), `"rule":"huge-sum"`)
	require.Contains(t, get(t, p, "/v1/alerts"), `"rule":"huge-p99"`)
	require.Contains(t, get(t, p, "/metrics"), `holdfast_query_skipped_records_total{reason="non_finite"} 0`)
	before := getWindows(t, p, "device_id=*")

	// After a restart, the same answers.
	p.stop(t)
	p = start(t, data, "--config", cfg, "--node-id", "site-x")
	require.Equal(t, before, getWindows(t, p, "device_id=*"))
	restarted := time.Now()
	var st struct {
		Skipped map[string]uint64 `json:"query_skipped_records"`
		Sinks   []struct {
			Lag uint64 `json:"lag_records"`
		} `json:"sinks"`
		Backup struct {
			LastUpload time.Time `json:"last_upload"`
		} `json:"backup"`
	}
	waitFor(t, "the sync and a snapshot", 30*time.Second, func() bool {
		require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &st))
		return len(st.Sinks) == 1 && st.Sinks[0].Lag == 0 && st.Backup.LastUpload.After(restarted)
	})
	require.Equal(t, map[string]uint64{"non_finite": 0, "corrupt": 0}, st.Skipped)

	// In the cloud: every record decodes, the values bit for bit as sent.
	values := map[string]uint64{}
	cloudRecords(t, srv.URL(), cloud.StreamEvents, "site-x", func(rec cloud.BatchRecord, _ jetstream.Msg) {
		e, err := event.DecodeBinary(rec.Payload)
		require.NoError(t, err)
		values[fmt.Sprint(e.Stream, e.TS-b5)] = math.Float64bits(e.Value)
	})
	require.Len(t, values, len(evs))
	for _, e := range evs {
		var v float64
		require.NoError(t, json.Unmarshal([]byte(e.value), &v))
		require.Equal(t, math.Float64bits(v), values[fmt.Sprint(e.stream, e.at)], "%s at %d", e.stream, e.at)
	}
	windows := map[string]event.WindowRecord{}
	alerts := 0
	cloudRecords(t, srv.URL(), cloud.StreamResults, "site-x", func(rec cloud.BatchRecord, _ jetstream.Msg) {
		switch event.Type(rec.Payload) {
		case event.TypeWindow:
			w, err := event.DecodeWindow(rec.Payload)
			require.NoError(t, err, "a window record in the cloud")
			windows[w.ID()] = w
		case event.TypeAlert:
			a, err := event.DecodeAlert(rec.Payload)
			require.NoError(t, err, "an alert record in the cloud")
			require.Greater(t, a.Value, 1e308, "%+v", a)
			alerts++
		}
	})
	require.Equal(t, 2, alerts, "huge-sum and huge-p99 fired")
	require.Len(t, windows, 14)
	for _, w := range before {
		c, ok := windows[w.ID]
		require.True(t, ok, "window %s in the cloud", w.ID)
		require.Equal(t, w.Overflow, c.Overflow, w.ID)
		require.Equal(t, w.Sum, c.Sum, w.ID)
		require.Equal(t, w.Mean, c.Mean(), w.ID)
		require.Equal(t, w.P50, c.P50, w.ID)
	}

	// The node lost: rebuilt from the cloud, it answers the same.
	p.kill()
	rebuilt := filepath.Join(dir, "rebuilt")
	out, err := exec.Command(binary, "recover", "--from-cloud", "--node-id", "site-x", "--cloud-url", srv.URL(),
		"--data-dir", rebuilt).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "validation  passed", "%s", out)
	p = start(t, rebuilt, "--config", filepath.Join(rebuilt, "holdfast.yaml"))
	require.Equal(t, before, getWindows(t, p, "device_id=*"))
}
