package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// cloudHolds is what a local cloud holds of a node: events per stream, and
// how often each window result and each event offset is there.
type cloudHolds struct {
	events  map[string]int    // stream → events
	offsets map[uint64]int    // event offset → times stored
	windows map[string]int    // window id → times stored
	streams map[string]string // window id → its stream
}

func cloudHoldsOf(t *testing.T, url, node string) cloudHolds {
	t.Helper()
	h := cloudHolds{events: map[string]int{}, offsets: map[uint64]int{}, windows: map[string]int{}, streams: map[string]string{}}
	cloudRecords(t, url, cloud.StreamEvents, node, func(rec cloud.BatchRecord, _ jetstream.Msg) {
		if event.Type(rec.Payload) != event.TypeEvent {
			return
		}
		ev, err := event.DecodeBinary(rec.Payload)
		require.NoError(t, err)
		h.events[ev.Stream]++
		h.offsets[rec.Offset]++
	})
	cloudRecords(t, url, cloud.StreamResults, node, func(rec cloud.BatchRecord, _ jetstream.Msg) {
		if event.Type(rec.Payload) != event.TypeWindow {
			return
		}
		w, err := event.DecodeWindow(rec.Payload)
		require.NoError(t, err)
		h.windows[w.ID()]++
		h.streams[w.ID()] = w.Stream
	})
	return h
}

// TestDegradationLimitedSyncsAggregatesOnly drives the real binary into
// limited (limited.cpu at 5 %, left below 3 %, and a load of a normal
// stream) with a local cloud, and checks the feature matrix's cloud sync
// cell, "aggregates only":
//
//   - status shows cloud_sync aggregates_only, and the sink aggregates_only;
//   - the cloud gets the window results of a normal stream ("temp", events
//     stamped over two minutes so that a 1m window closes past the 30 s
//     lateness) and every event of the critical stream "alarm", but no
//     "temp" event, and no more events of the load's stream while it runs;
//   - once the load stops and the level is back at normal, every event the
//     node stored is in the cloud exactly once, and every window result
//     once.
func TestDegradationLimitedSyncsAggregatesOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("drives the node's load for several seconds")
	}
	dir := t.TempDir()
	srv := localCloud(t, dir)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
cloud:
  url: %s
  max_delay: 20ms
windows:
  sizes: [1m]
streams:
  alarm:
    priority: critical
degradation:
  limited_windows: [1m] # written live at limited (the default keeps 5m and 1h)
  limited:
    cpu: 0.05
    cpu_exit: 0.03
    enter_after: 1s
    hold: 3s
`, srv.URL()))
	const node = "deg-agg"
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", node)
	level := func() string { return degradationStatus(t, p).Degradation.Level }
	waitFor(t, "normal at start", 60*time.Second, func() bool { return level() == "normal" })

	// A load of the normal stream "load" until told to stop: limited.
	var (
		mu       sync.Mutex
		accepted = map[string]int{} // stream → events stored
	)
	stopLoad := postLoad(t, p, 1, 100, func(_, i, j int) string {
		return fmt.Sprintf(`{"device_id":"l%d","stream":"load","value":%d}`, j%5, 100*i+j)
	}, func(code int, r ingestResponse) bool {
		if code != 200 {
			t.Errorf("post: %d %+v", code, r)
			return false
		}
		mu.Lock()
		accepted["load"] += r.Accepted
		mu.Unlock()
		return true
	})
	defer stopLoad()
	waitFor(t, "limited under load", 60*time.Second, func() bool { return level() == "limited" })
	waitFor(t, "cloud sync aggregates only", 10*time.Second, func() bool {
		return degradationStatus(t, p).Degradation.Features["cloud_sync"] == "aggregates_only"
	})
	var sinks struct {
		Sinks []struct {
			AggregatesOnly bool `json:"aggregates_only"`
		} `json:"sinks"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &sinks))
	require.Len(t, sinks.Sinks, 1)
	require.True(t, sinks.Sinks[0].AggregatesOnly, "the sink says it syncs aggregates only")

	// "temp" over two minutes of event time, 5 s apart (limited samples
	// every other one), and ten "alarm" events.
	t0 := time.Now().Add(-5 * time.Minute).Truncate(time.Minute).UnixMilli()
	var b strings.Builder
	b.WriteString("[")
	for k := range 25 {
		if k > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":"temp-%d","device_id":"t1","stream":"temp","ts":%d,"value":%d}`, k, t0+int64(k)*5000, k)
	}
	b.WriteString("]")
	code, r := post(t, p, "application/json", "", []byte(b.String()))
	require.Equal(t, 200, code, "%+v", r)
	require.Positive(t, r.Accepted)
	mu.Lock()
	accepted["temp"] = r.Accepted
	mu.Unlock()
	b.Reset()
	b.WriteString("[")
	for k := range 10 {
		if k > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":"alarm-%d","device_id":"a1","stream":"alarm","value":%d}`, k, k)
	}
	b.WriteString("]")
	code, r = post(t, p, "application/json", "", []byte(b.String()))
	require.Equal(t, 200, code, "%+v", r)
	require.Equal(t, 10, r.Accepted, "the critical stream is never sampled")
	mu.Lock()
	accepted["alarm"] = r.Accepted
	mu.Unlock()

	var held cloudHolds
	waitFor(t, "temp's window results and every alarm event in the cloud", 30*time.Second, func() bool {
		held = cloudHoldsOf(t, srv.URL(), node)
		temp := 0
		for _, s := range held.streams {
			if s == "temp" {
				temp++
			}
		}
		return temp > 0 && held.events["alarm"] == 10
	})
	require.Equal(t, "limited", level(), "still limited")
	require.Zero(t, held.events["temp"], "no raw temp event synced while aggregates only")
	// The load's events wait too: the cloud's count stands while it runs.
	time.Sleep(2 * time.Second)
	later := cloudHoldsOf(t, srv.URL(), node)
	require.Equal(t, "limited", level(), "still limited")
	require.Equal(t, held.events["load"], later.events["load"], "no raw load event synced while aggregates only")
	require.Zero(t, later.events["temp"])
	t.Logf("while limited the cloud holds %d window results, %d alarm and %d load events (those before limited)",
		len(later.windows), later.events["alarm"], later.events["load"])

	// The load stops: normal, and everything follows once.
	stopLoad()
	last := ""
	waitFor(t, "normal once the load stops", 60*time.Second, func() bool {
		s := degradationStatus(t, p)
		if now := fmt.Sprintf("%s %v", s.Degradation.Level, s.Degradation.Reasons); now != last && s.Degradation.Level != "normal" {
			last = now
			t.Logf("waiting for normal: %s", now) // what holds the level, if it never comes
		}
		if s.Degradation.Level == "normal" {
			return true
		}
		// Status at 50 a second with a held backlog costs more CPU than
		// the 3 % the level waits for: look less often.
		time.Sleep(500 * time.Millisecond)
		return false
	})
	require.Equal(t, "real_time", degradationStatus(t, p).Degradation.Features["cloud_sync"])
	mu.Lock()
	defer mu.Unlock()
	total := accepted["load"] + accepted["temp"] + accepted["alarm"]
	var final cloudHolds
	waitFor(t, "every accepted event in the cloud", 60*time.Second, func() bool {
		final = cloudHoldsOf(t, srv.URL(), node)
		if len(final.offsets) >= total {
			return true
		}
		time.Sleep(time.Second)
		return false
	})
	for off, n := range final.offsets {
		require.Equal(t, 1, n, "event %d stored %d times", off, n)
	}
	for _, stream := range []string{"load", "temp", "alarm"} {
		require.Equal(t, accepted[stream], final.events[stream], "%s: every accepted event in the cloud, once", stream)
	}
	require.Len(t, final.offsets, total)
	for id, n := range final.windows {
		require.Equal(t, 1, n, "window %s stored %d times", id, n)
	}
	for id := range later.windows {
		require.Equal(t, 1, final.windows[id], "window %s", id)
	}
	t.Logf("after limited: %d events (%d temp, %d load) and %d window results in the cloud, each once",
		total, accepted["temp"], accepted["load"], len(final.windows))
}
