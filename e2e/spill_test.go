package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// spillTrigger is the memory trigger's state in status.
func spillTrigger(t *testing.T, p *proc) (state string, value float64) {
	t.Helper()
	for _, tr := range degradationStatus(t, p).Triggers {
		if tr.Metric == "memory" {
			require.Equal(t, "spill_window_state", tr.Action)
			return tr.State, tr.Value
		}
	}
	t.Fatal("no memory trigger in status")
	return "", 0
}

// spilledStreams is status processing.spilled_streams.
func spilledStreams(t *testing.T, p *proc) int {
	t.Helper()
	var s struct {
		Processing struct {
			Spilled *int `json:"spilled_streams"`
		} `json:"processing"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
	require.NotNil(t, s.Processing.Spilled, "processing.spilled_streams in status")
	return *s.Processing.Spilled
}

// postSpillEvents posts n events to each of streams, 5 devices, event times
// from at on, 7 ms apart, values of their own.
func postSpillEvents(t *testing.T, p *proc, streams []string, at int64, n int) {
	t.Helper()
	var lines []string
	for _, s := range streams {
		for k := range n {
			lines = append(lines, fmt.Sprintf(`{"device_id":"d%d","stream":"%s","ts":%d,"value":%d}`, k%5, s, at+int64(k)*7, (k*13+len(s))%101))
		}
	}
	for i := 0; i < len(lines); i += 1000 {
		code, r := post(t, p, "application/x-ndjson", "", []byte(strings.Join(lines[i:min(i+1000, len(lines))], "\n")))
		require.Equal(t, 200, code, "%+v", r)
	}
}

// TestMemoryTriggerSpillsWindowState drives the memory trigger's action
// through the real binary, with GOMEMLIMIT=96MiB and the trigger's
// thresholds at 70 % up, 60 % down (the node idles near 13 %; the levels'
// memory thresholds are off, so windows stay on throughout). The
// de-duplication set is bounded to 100 000 keys (4.8 MiB): full at its
// default bound of a million it would hold half the limit after the load
// stops, and the memory could settle above the down threshold. Twenty streams
// get events two hours ahead of the clock (ingest.max_future 24h), so that
// their windows stay open and idle timeouts close none. Then:
//   - heavy posts take the trigger up, and the node spills the quiet
//     streams (status processing.spilled_streams, holdfast_window_spilled_streams);
//   - events for half the streams while it is up load those back;
//   - the posts stopped, the trigger goes down and every stream comes back;
//   - an event far later in each stream closes its windows, and every
//     window written equals a naive recompute of the stored events.
func TestMemoryTriggerSpillsWindowState(t *testing.T) {
	if testing.Short() {
		t.Skip("raises the node's memory for several seconds")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, `
ingest:
  max_future: 24h
  dedup_max_entries: 100000
windows:
  sizes: [1s, 5s]
  allowed_lateness: 0s
  idle_timeout: 2s
degradation:
  limited:
    cpu: 0
    ack_p99: 0s
    queue: 0
  minimal:
    memory: 0
  emergency:
    memory: 0
  triggers:
    memory:
      up: 0.70
      down: 0.60
`)
	p := startEnv(t, []string{"GOMEMLIMIT=96MiB"}, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "spill")
	waitFor(t, "memory measured", 60*time.Second, func() bool { _, v := spillTrigger(t, p); return v > 0 })
	_, idle := spillTrigger(t, p)
	t.Logf("idle: memory %.2f of GOMEMLIMIT", idle)

	var streams []string
	for i := range 20 {
		streams = append(streams, fmt.Sprint("spill-", i))
	}
	base := time.Now().Add(2 * time.Hour).Truncate(10 * time.Second).UnixMilli()
	postSpillEvents(t, p, streams, base, 500)
	waitFor(t, "processing caught up", 60*time.Second, func() bool { return processingOf(t, p).Lag == 0 })
	require.Zero(t, spilledStreams(t, p), "nothing spilled while the trigger is not up")

	heavy := newPoster(p, "heavy", 20, 2000, onlyTemp, false)
	heavy.gzipped = heavyBatch(2000)
	heavy.run(t, 6)
	halted := false
	halt := func() {
		if !halted {
			halted = true
			heavy.halt()
		}
	}
	defer halt()
	waitFor(t, "the memory trigger up", 60*time.Second, func() bool {
		s, _ := spillTrigger(t, p)
		return s == "up"
	})
	waitFor(t, "quiet streams spilled", 30*time.Second, func() bool {
		return spilledStreams(t, p) >= len(streams) && metricValue(t, p, "holdfast_window_spilled_streams") >= float64(len(streams))
	})
	require.Positive(t, metricValue(t, p, "holdfast_window_spill_bytes"))
	t.Logf("spilled: %d streams, %.0f bytes", spilledStreams(t, p), metricValue(t, p, "holdfast_window_spill_bytes"))

	// Events for half the streams while spilled: each loads its stream back.
	postSpillEvents(t, p, streams[:10], base+3500, 300)
	waitFor(t, "processing caught up", 60*time.Second, func() bool { return processingOf(t, p).Lag == 0 })
	require.Positive(t, metricValue(t, p, "holdfast_window_spill_loads_total"))

	halt()
	last := ""
	waitFor(t, "the memory trigger down", 120*time.Second, func() bool {
		s, v := spillTrigger(t, p)
		if now := fmt.Sprintf("%s %.2f", s, v); now != last {
			last = now
			t.Logf("after: %s", now)
		}
		time.Sleep(200 * time.Millisecond)
		return s == "down"
	})
	waitFor(t, "every stream loaded back", 30*time.Second, func() bool {
		return spilledStreams(t, p) == 0 && metricValue(t, p, "holdfast_window_spilled_streams") == 0
	})

	// An event an hour later in each stream closes every window before it.
	postSpillEvents(t, p, streams, base+time.Hour.Milliseconds(), 1)
	waitFor(t, "processing caught up", 60*time.Second, func() bool { return processingOf(t, p).Lag == 0 })
	sizes := []time.Duration{time.Second, 5 * time.Second}
	for _, s := range streams {
		want := testutil.RecomputeWindows(t, rawEvents(t, p, "&stream="+s), sizes, 0)
		require.NotEmpty(t, want)
		waitFor(t, "every closed window of "+s+" written", 30*time.Second, func() bool {
			return len(streamWindows(t, p, s)) >= len(want)
		})
		testutil.RequireWindowsEqual(t, want, streamWindows(t, p, s))
	}
}
