package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pages fetches every page of a query endpoint and returns its items (under
// key) as raw JSON, in the order served.
func pages(t *testing.T, p *proc, path, key string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	cursor := ""
	for {
		u := p.url(path)
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		resp, err := http.Get(u)
		require.NoError(t, err)
		var page map[string]json.RawMessage
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, 200, resp.StatusCode, u)
		var items []json.RawMessage
		require.NoError(t, json.Unmarshal(page[key], &items))
		out = append(out, items...)
		var next string
		if raw, ok := page["next"]; ok {
			_ = json.Unmarshal(raw, &next)
		}
		if next == "" {
			return out
		}
		cursor = next
	}
}

// answers is what a node answers about its devices.
type answers struct {
	events, windows, alerts []json.RawMessage
}

func query(t *testing.T, p *proc) answers {
	t.Helper()
	return answers{
		events:  pages(t, p, "/v1/events?limit=10000", "events"),
		windows: pages(t, p, "/v1/windows?device_id=*&limit=10000", "windows"),
		alerts:  pages(t, p, "/v1/alerts?", "alerts"),
	}
}

// finalOnly keeps the closed windows (the open ones' partial results move on
// with the clock of whoever answers).
func finalOnly(t *testing.T, ws []json.RawMessage) []string {
	t.Helper()
	var out []string
	for _, w := range ws {
		var v struct {
			Final bool `json:"final"`
		}
		require.NoError(t, json.Unmarshal(w, &v))
		if v.Final {
			out = append(out, string(w))
		}
	}
	return out
}

func asStrings(rs []json.RawMessage) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r)
	}
	return out
}

// TestRecoverFromCloud is the disaster test: node A runs under load and syncs
// to an embedded JetStream cloud, with checkpoints, hourly snapshots made
// frequent and its config in the registry. A is killed and its data dir
// deleted. `holdfast recover --from-cloud` builds B, which answers exactly
// what A answered once fully synced: every event (late flags included), every
// closed window and every alert. `--at` restores an earlier point: exactly
// the events A had received up to it, and windows equal to A's.
func TestRecoverFromCloud(t *testing.T) {
	if testing.Short() {
		t.Skip("disaster test skipped in -short mode")
	}
	t.Parallel()
	dir := t.TempDir()
	srv := localCloud(t, dir)

	cfg := filepath.Join(dir, "a.yaml")
	writeFile(t, cfg, strings.Replace(windowConfig, "  interval: 1s\n", "  interval: 1s\n  snapshot_interval: 2s\n", 1)+`streams:
  hum: {priority: low}
cloud:
  url: `+srv.URL()+"\n")
	dataA := filepath.Join(dir, "a")
	a := start(t, dataA, "--config", cfg, "--node-id", "site-a")

	// Load for about 6 s: event times run ahead of the clock so that windows
	// close, with some disorder and some late events.
	base := time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli()
	var mu sync.Mutex
	clock := base
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 3))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				clock += 50
				now := clock
				mu.Unlock()
				var body bytes.Buffer
				for i := range 40 {
					ts := now - int64(r.IntN(400))
					if r.IntN(50) == 0 {
						ts -= 4000 // late
					}
					fmt.Fprintf(&body, `{"device_id":"d%d","stream":"%s","ts":%d,"value":%d,"id":"e-%d-%d-%d"}`+"\n",
						(w*40+i)%9, []string{"temp", "hum"}[i%2], ts, r.IntN(100), w, n, i)
				}
				resp, err := http.Post(a.url("/v1/events"), "application/x-ndjson", &body)
				if err != nil {
					return
				}
				resp.Body.Close()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(3 * time.Second)
	mid := time.Now().UTC().Truncate(time.Second)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()

	// Wait until A has processed and synced everything, twice in a row with
	// nothing new in between, and a snapshot from after the load is in the
	// cloud.
	loadEnd := time.Now()
	last := uint64(0)
	lastStatus := ""
	defer func() {
		if t.Failed() {
			t.Logf("A's last status: %s", lastStatus)
		}
	}()
	waitFor(t, "A to process, sync and upload a snapshot", 60*time.Second, func() bool {
		var s struct {
			Buffer struct {
				Next uint64 `json:"next_offset"`
			} `json:"buffer"`
			Processing struct {
				Replaying bool   `json:"replaying"`
				Lag       uint64 `json:"lag_records"`
			} `json:"processing"`
			Sinks []struct {
				Lag uint64 `json:"lag_records"`
			} `json:"sinks"`
			Backup struct {
				LastUpload time.Time `json:"last_upload"`
			} `json:"backup"`
		}
		lastStatus = get(t, a, "/v1/status")
		if json.Unmarshal([]byte(lastStatus), &s) != nil || len(s.Sinks) != 1 {
			return false
		}
		settled := !s.Processing.Replaying && s.Processing.Lag == 0 && s.Sinks[0].Lag == 0 &&
			s.Backup.LastUpload.After(loadEnd) && s.Buffer.Next == last
		last = s.Buffer.Next
		if !settled {
			time.Sleep(200 * time.Millisecond)
		}
		return settled
	})
	want := query(t, a)
	require.Greater(t, len(want.events), 1000)
	a.kill()
	require.NoError(t, os.RemoveAll(dataA))

	// Disaster recovery into B, with little memory to sort in: the records
	// pass through sorted runs on disk.
	dataB := filepath.Join(dir, "b")
	out, err := exec.Command(binary, "recover", "--from-cloud", "--node-id", "site-a", "--cloud-url", srv.URL(),
		"--data-dir", dataB, "--sort-memory", "64KiB").CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("recover:\n%s", out)
	require.Contains(t, string(out), "validation  passed")
	require.Regexp(t, `records held in memory, [1-9][0-9]* sorted runs on disk`, string(out))
	require.Contains(t, string(out), "snapshot    site-a/")

	b := start(t, dataB, "--config", filepath.Join(dataB, "holdfast.yaml"))
	got := query(t, b)
	b.stop(t)
	require.Equal(t, asStrings(want.events), asStrings(got.events), "events")
	require.Equal(t, finalOnly(t, want.windows), finalOnly(t, got.windows), "closed windows")
	require.Equal(t, asStrings(want.alerts), asStrings(got.alerts), "alerts")

	// An earlier point: the events A had received by mid, and windows as A
	// computed them.
	dataC := filepath.Join(dir, "c")
	out, err = exec.Command(binary, "recover", "--from-cloud", "--node-id", "site-a", "--cloud-url", srv.URL(),
		"--data-dir", dataC, "--at", mid.Format(time.RFC3339)).CombinedOutput()
	require.NoError(t, err, "%s", out)
	t.Logf("recover --at %s:\n%s", mid.Format(time.RFC3339), out)
	c := start(t, dataC, "--config", filepath.Join(dataC, "holdfast.yaml"), "--cloud-url", "")
	early := query(t, c)
	c.stop(t)
	type ev struct {
		Offset   uint64    `json:"offset"`
		Received time.Time `json:"received_at"`
	}
	wantByOffset := map[uint64]string{}
	var cut uint64 = 1 << 62
	for _, e := range want.events {
		var v ev
		require.NoError(t, json.Unmarshal(e, &v))
		wantByOffset[v.Offset] = string(e)
		if v.Received.After(mid) && v.Offset < cut {
			cut = v.Offset
		}
	}
	n := 0
	for _, e := range want.events {
		var v ev
		require.NoError(t, json.Unmarshal(e, &v))
		if v.Offset < cut {
			n++
		}
	}
	require.Len(t, early.events, n, "exactly A's events before the first one received after %s", mid)
	require.Less(t, n, len(want.events))
	for _, e := range early.events {
		var v ev
		require.NoError(t, json.Unmarshal(e, &v))
		require.False(t, v.Received.After(mid), "event at %d received after the recovery point", v.Offset)
		require.JSONEq(t, wantByOffset[v.Offset], string(e))
	}
	wantWindows := map[string]bool{}
	for _, w := range finalOnly(t, want.windows) {
		wantWindows[w] = true
	}
	earlyWindows := finalOnly(t, early.windows)
	require.NotEmpty(t, earlyWindows)
	for _, w := range earlyWindows {
		require.True(t, wantWindows[w], "window of the earlier point not as A computed it: %s", w)
	}
}
