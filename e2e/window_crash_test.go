package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/stretchr/testify/require"
)

// The window crash test uses small windows and event times that run ahead of
// the clock, so that many windows open and close in a few seconds.
const windowConfig = `
windows:
  sizes: [1s, 5s]
  allowed_lateness: 500ms
  idle_timeout: 1h
checkpoints:
  interval: 1s
alerts:
  rules:
    - {name: hot, stream: temp, op: ">", threshold: 90, for_count: 3, severity: critical}
    - {name: hot-avg, stream: temp, source: window, window: 1s, aggregate: mean, op: ">", threshold: 60}
`

// finalWindows pages through every closed window in the log.
func finalWindows(t *testing.T, p *proc) []testutil.WindowJSON {
	t.Helper()
	return testutil.FinalWindows(t, "http://"+p.httpAddr)
}

// rawEvents are the node's stored events (GET /v1/events with filter), as
// testutil.RecomputeWindows takes them.
func rawEvents(t *testing.T, p *proc, filter string) []testutil.RawEvent {
	t.Helper()
	events := allEvents(t, p, filter)
	raw := make([]testutil.RawEvent, 0, len(events))
	for _, e := range events {
		raw = append(raw, testutil.RawEvent{Offset: e.Offset, DeviceID: e.DeviceID, Stream: e.Stream, TS: e.TS, Value: e.Value})
	}
	return raw
}

// streamWindows are the final windows of one stream (finalWindows).
func streamWindows(t *testing.T, p *proc, stream string) []testutil.WindowJSON {
	t.Helper()
	var out []testutil.WindowJSON
	for _, w := range finalWindows(t, p) {
		if w.Stream == stream {
			out = append(out, w)
		}
	}
	return out
}

// TestWindowsSurviveCrashes SIGKILLs the node while events stream in,
// windows open and close and checkpoints are written every second, restarts
// it (from its newest checkpoint), and checks that the window results in the
// log are exactly those a batch recompute over the stored events gives: each
// once, with the same aggregates, and no alert written twice. Before the last
// restart it damages the newest checkpoint: the node falls back to the one
// before, with the same results.
func TestWindowsSurviveCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	t.Parallel()
	const rounds = 22
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(windowConfig), 0o600))
	data := filepath.Join(dir, "data")
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 11))
	t.Logf("seed %d", seed)

	base := time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli()
	var clockMu sync.Mutex
	clock := base // event time shared by all senders; runs ahead 50 ms per batch
	acked := 0
	resumed, duringWrite := 0, 0
	for round := range rounds {
		p := start(t, data, "--config", cfg)
		if round > 0 && strings.Contains(p.logs(), "checkpoint loaded") {
			resumed++
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(seed+uint64(round), uint64(w)))
				client := &http.Client{Timeout: 10 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					clockMu.Lock()
					clock += 50
					now := clock
					clockMu.Unlock()
					var body bytes.Buffer
					for i := range 40 {
						// Mostly in order, some disorder within the lateness, a few
						// far too late.
						ts := now - int64(r.IntN(400))
						if r.IntN(50) == 0 {
							ts = now - 3000 - int64(r.IntN(5000))
						}
						fmt.Fprintf(&body, `{"device_id":"d%d","stream":"%s","ts":%d,"value":%d}`+"\n",
							(w*40+i)%9, []string{"temp", "hum"}[i%2], ts, r.IntN(100))
					}
					resp, err := client.Post(p.url("/v1/events"), "application/x-ndjson", &body)
					if err != nil {
						return
					}
					resp.Body.Close()
					if resp.StatusCode == 200 {
						clockMu.Lock()
						acked += 40
						clockMu.Unlock()
					}
					time.Sleep(5 * time.Millisecond) // bounds the events the recompute goes over

				}
			}()
		}
		time.Sleep(time.Duration(200+rng.IntN(1800)) * time.Millisecond) // checkpoints at 1 s
		p.kill()
		if tmp, _ := filepath.Glob(filepath.Join(data, "checkpoints", "*.tmp")); len(tmp) > 0 {
			duringWrite++
		}
		close(stop)
		wg.Wait()
	}
	t.Logf("%d of %d restarts resumed from a checkpoint; %d kills landed during a checkpoint write",
		resumed, rounds-1, duringWrite)
	require.Greater(t, resumed, rounds/2, "restarts should resume from checkpoints")

	// Damage the newest checkpoint: the restart falls back to the previous.
	ckpts, err := filepath.Glob(filepath.Join(data, "checkpoints", "*.ckpt"))
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(ckpts), 2)
	slices.Sort(ckpts)
	newest := ckpts[len(ckpts)-1]
	b, err := os.ReadFile(newest)
	require.NoError(t, err)
	b[len(b)/2] ^= 0xff
	require.NoError(t, os.WriteFile(newest, b, 0o600))

	// Restart, let the processor replay and catch up, then compare.
	p := start(t, data, "--config", cfg)
	waitFor(t, "the fallback to the previous checkpoint", 10*time.Second, func() bool {
		return strings.Contains(p.logs(), "checkpoint unusable") &&
			strings.Contains(p.logs(), "checkpoint loaded") && strings.Contains(p.logs(), filepath.Base(ckpts[len(ckpts)-2]))
	})
	waitFor(t, "processor to catch up", 60*time.Second, func() bool {
		var s struct {
			Processing struct {
				Replaying bool   `json:"replaying"`
				Lag       uint64 `json:"lag_records"`
			} `json:"processing"`
		}
		resp, err := http.Get(p.url("/v1/status"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&s) == nil && !s.Processing.Replaying && s.Processing.Lag == 0
	})
	time.Sleep(200 * time.Millisecond) // the writer's flush interval is 20 ms
	raw := rawEvents(t, p, "")
	got := finalWindows(t, p)
	p.stop(t)
	alerts := logAlertRecords(t, data)

	want := testutil.RecomputeWindows(t, raw, []time.Duration{time.Second, 5 * time.Second}, 500*time.Millisecond)
	for k, n := range alerts {
		require.Equal(t, 1, n, "alert record %s written %d times", k, n)
	}
	testutil.RequireWindowsEqual(t, want, got)
	t.Logf("%d crashes, %d events acknowledged, %d stored, %d windows closed, all equal to the recompute; %d alert records",
		rounds, acked, len(raw), len(got), len(alerts))
	require.Greater(t, len(got), 100, "too few windows closed to prove anything")
}

// logAlertRecords counts the alert records in a stopped node's log by id and
// state.
func logAlertRecords(t *testing.T, dataDir string) map[string]int {
	t.Helper()
	l, err := buffer.Open(buffer.Options{Dir: filepath.Join(dataDir, "log")})
	require.NoError(t, err)
	defer l.Close()
	r := l.NewReader(0)
	defer r.Close()
	out := map[string]int{}
	for {
		_, p, err := r.Next()
		if err != nil {
			return out
		}
		if event.Type(p) == event.TypeAlert {
			a, err := event.DecodeAlert(p)
			require.NoError(t, err)
			out[alertKey(a.ID(), a.Firing)]++
		}
	}
}
