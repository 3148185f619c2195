package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// TestPressureLevelsUpAndBack drives a node with a 1 MiB buffer and the cloud
// away up through warning, critical and emergency, with a critical, a normal
// and a low-priority stream: the levels' ingest actions apply at their
// thresholds (sampling from critical, refusal of the low stream from
// emergency, the critical stream always in). Then the cloud comes back: the
// backlog syncs, the synced records are evicted and the level comes back to
// normal. At the end the cloud holds exactly the acknowledged events, each
// once, every critical one among them, and the ledger counts exactly the
// events kept out, by reason and stream.
func TestPressureLevelsUpAndBack(t *testing.T) {
	if testing.Short() {
		t.Skip("pressure test skipped in -short mode")
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cloudAddr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, "windows:\n  enabled: false\nbuffer:\n  segment_bytes: 64KiB\n  max_bytes: 1MiB\n"+
		"streams:\n  door: {priority: critical}\n  hvac: {priority: low}\ncloud:\n  url: nats://"+cloudAddr+"\n")
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "site-p")
	defer p.stop(t)

	type st struct {
		Buffer struct {
			Level string  `json:"level"`
			Bytes float64 `json:"bytes"`
			Max   float64 `json:"max_bytes"`
		} `json:"buffer"`
		Losses map[string]map[string]uint64 `json:"losses"`
		Sinks  []struct {
			Lag uint64 `json:"lag_records"`
		} `json:"sinks"`
	}
	status := func() st {
		var s st
		require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
		return s
	}
	acked := map[string]string{} // event id → stream
	keptOut := map[string]map[string]int{}
	levels := map[string]bool{}
	streams := []string{"door", "temp", "temp", "hvac"}
	var body bytes.Buffer
	post := func(round int) {
		body.Reset()
		ids := make([]string, 200)
		for j := range ids {
			ids[j] = fmt.Sprintf("p-%d-%d", round, j)
			fmt.Fprintf(&body, `{"device_id":"d%d","stream":"%s","value":%d,"id":"%s"}`+"\n", j%9, streams[j%4], j, ids[j])
		}
		resp, err := http.Post(p.url("/v1/events"), "application/x-ndjson", &body)
		require.NoError(t, err)
		defer resp.Body.Close()
		var r struct {
			Rejected []struct {
				Index int    `json:"index"`
				Error string `json:"error"`
			} `json:"rejected"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
		require.Equal(t, 200, resp.StatusCode)
		out := map[int]string{}
		for _, rj := range r.Rejected {
			switch {
			case bytes.Contains([]byte(rj.Error), []byte("(sampled)")):
				out[rj.Index] = "sampled"
			case bytes.Contains([]byte(rj.Error), []byte("(refused)")):
				out[rj.Index] = "refused"
			default:
				t.Fatalf("event %d rejected: %s", rj.Index, rj.Error)
			}
		}
		for j, id := range ids {
			stream := streams[j%4]
			if why, ok := out[j]; ok {
				require.NotEqual(t, "door", stream, "a critical event was kept out")
				if keptOut[why] == nil {
					keptOut[why] = map[string]int{}
				}
				keptOut[why][stream]++
				continue
			}
			acked[id] = stream
		}
	}
	// Up: fill past each threshold and let the node see it (it looks every
	// second), to just past emergency, before retention would have to
	// delete anything.
	round := 0
	for _, step := range []struct {
		level string
		at    float64
	}{{"warning", 0.72}, {"critical", 0.87}, {"emergency", 0.955}} {
		for ; ; round++ {
			require.Less(t, round, 2000)
			if s := status(); s.Buffer.Bytes/s.Buffer.Max >= step.at {
				break
			}
			post(round)
		}
		waitFor(t, "level "+step.level, 5*time.Second, func() bool {
			l := status().Buffer.Level
			levels[l] = true
			return l == step.level
		})
		if step.level == "critical" {
			post(50000) // at critical: normal streams sampled, nothing refused
			require.Positive(t, keptOut["sampled"]["temp"])
			require.Zero(t, keptOut["refused"]["hvac"])
		}
	}
	post(100000) // at emergency: the low stream refused
	require.Positive(t, keptOut["refused"]["hvac"])
	require.Positive(t, keptOut["sampled"]["temp"])

	// Back: the cloud returns, the backlog syncs, synced records are evicted.
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: cloudAddr})
	require.NoError(t, err)
	defer srv.Close()
	waitFor(t, "the level to come back to normal", 120*time.Second, func() bool {
		s := status()
		levels[s.Buffer.Level] = true
		return s.Buffer.Level == "normal" && len(s.Sinks) == 1 && s.Sinks[0].Lag == 0
	})
	t.Logf("levels seen: %v", levels)
	for _, l := range []string{"warning", "critical", "emergency", "normal"} {
		require.True(t, levels[l], "level %s never seen", l)
	}

	got := newReceived()
	cloudMessages(t, &got, srv.URL(), cloud.StreamEvents, "site-p")
	cloudIDs := map[string]int{}
	for _, id := range got.eventID {
		cloudIDs[id]++
	}
	doors := 0
	for id, stream := range acked {
		require.Equal(t, 1, cloudIDs[id], "acknowledged event %s (%s) in the cloud once", id, stream)
		if stream == "door" {
			doors++
		}
	}
	require.Len(t, cloudIDs, len(acked), "the cloud holds exactly the acknowledged events")
	s := status()
	require.Empty(t, s.Losses["evicted_unsynced"], "nothing unsynced was deleted")
	for why, byStream := range keptOut {
		for stream, n := range byStream {
			require.Equal(t, uint64(n), s.Losses[why][stream], "%s %s", why, stream)
		}
	}
	var ledgered uint64
	for _, rec := range ledgerRecords(t, srv.URL(), "site-p") {
		require.Contains(t, []byte{event.LossSampled, event.LossRefused}, rec.Reason)
		ledgered += rec.Count
	}
	var want uint64
	for _, byStream := range keptOut {
		for _, n := range byStream {
			want += uint64(n)
		}
	}
	require.Equal(t, want, ledgered, "the cloud's ledger counts every event kept out")
	t.Logf("%d events acknowledged (%d critical), all in the cloud once; kept out: %v", len(acked), doors, keptOut)
}
