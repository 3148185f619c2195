package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/testutil/cloudtest"
)

// metricValue is the value of the unlabelled metric name on /metrics.
func metricValue(t *testing.T, p *proc, name string) float64 {
	t.Helper()
	for _, l := range strings.Split(get(t, p, "/metrics"), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, l)
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// processingState is the processing part of /v1/status.
type processingState struct {
	Lag     uint64 `json:"lag_records"` // records the processor has yet to read
	Workers int    `json:"workers"`     // workers running
}

func processingOf(t *testing.T, p *proc) processingState {
	t.Helper()
	var s struct {
		Processing processingState `json:"processing"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
	return s.Processing
}

// TestFastPathPacesBackgroundThenCatchesUp drives the latency trigger's
// action through the real binary. The trigger's thresholds are set so that
// any acknowledgement takes it up (p99 above 0.4 ms: the histogram's lowest
// bucket is 0.5 ms) and only a quiet ack window takes it down. Under a load
// of a normal stream and a critical one, with a cloud:
//   - the trigger goes up and the node paces its background work
//     (holdfast_fast_path_active 1, rest time counted);
//   - once the load stops and the trigger goes down, pacing stops;
//   - nothing paced was skipped: every event is processed, every closed
//     window equals a naive recompute of the stored events, and every event
//     reaches the cloud exactly once.
func TestFastPathPacesBackgroundThenCatchesUp(t *testing.T) {
	if testing.Short() {
		t.Skip("drives the node's load for several seconds")
	}
	t.Parallel()
	dir := t.TempDir()
	srv := localCloud(t, dir)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
cloud:
  url: %s
  max_delay: 20ms
windows:
  sizes: [1s, 5s]
  allowed_lateness: 0s
streams:
  door:
    priority: critical
degradation:
  fast_path_share: 0.2
  triggers:
    latency:
      up: 0.0004
      down: 0.0001
`, srv.URL()))
	const node = "fastpath"
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", node)
	trigger := func() string {
		for _, tr := range degradationStatus(t, p).Triggers {
			if tr.Metric == "latency" {
				require.Equal(t, "prioritize_fast_path", tr.Action)
				return tr.State
			}
		}
		t.Fatal("no latency trigger in status")
		return ""
	}

	// Event time from two hours ago, 1 ms apart, so that windows close as
	// the load goes on.
	base := time.Now().Add(-2 * time.Hour).Truncate(10 * time.Second).UnixMilli()
	stopLoad := postLoad(t, p, 1, 100, func(_, i, j int) string {
		stream := "temp"
		if j == 0 {
			stream = "door"
		}
		k := i*100 + j
		return fmt.Sprintf(`{"device_id":"d%d","stream":"%s","ts":%d,"value":%d}`, j%5, stream, base+int64(k), k%97)
	}, answeredOK(t))
	defer stopLoad()

	waitFor(t, "the latency trigger up", 30*time.Second, func() bool { return trigger() == "up" })
	waitFor(t, "background work paced", 30*time.Second, func() bool {
		return metricValue(t, p, "holdfast_fast_path_active") == 1 &&
			metricValue(t, p, "holdfast_fast_path_rest_seconds_total") > 0
	})
	stopLoad()
	waitFor(t, "the latency trigger down once acks stop", 60*time.Second, func() bool { return trigger() == "down" })
	waitFor(t, "pacing off", 10*time.Second, func() bool { return metricValue(t, p, "holdfast_fast_path_active") == 0 })
	waitFor(t, "processing caught up", 60*time.Second, func() bool { return processingOf(t, p).Lag == 0 })

	raw := rawEvents(t, p, "&stream=temp")
	require.NotEmpty(t, raw)
	want := testutil.RecomputeWindows(t, raw, []time.Duration{time.Second, 5 * time.Second}, 0)
	waitFor(t, "every closed window written", 30*time.Second, func() bool {
		got := len(streamWindows(t, p, "temp"))
		return got >= len(want)
	})
	testutil.RequireWindowsEqual(t, want, streamWindows(t, p, "temp"))

	var offsets []uint64
	for _, e := range allEvents(t, p, "") {
		offsets = append(offsets, e.Offset)
	}
	cloudtest.RequireEventsOnce(t, srv.URL(), node, offsets, 60*time.Second)
}
