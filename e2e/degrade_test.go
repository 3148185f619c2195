package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"

	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// degradationOf is the degradation part of /v1/status.
type degradationOf struct {
	Degradation struct {
		Level    string            `json:"level"`
		Since    string            `json:"since"`
		Reasons  []string          `json:"reasons"`
		Features map[string]string `json:"features"`
	} `json:"degradation"`
	Triggers []struct {
		Metric string  `json:"metric"`
		Value  float64 `json:"value"`
		State  string  `json:"state"`
		Action string  `json:"action"`
	} `json:"triggers"`
	Losses map[string]map[string]uint64 `json:"losses"`
}

func degradationStatus(t *testing.T, p *proc) degradationOf {
	t.Helper()
	var s degradationOf
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
	return s
}

// TestDegradationLevels drives the real binary through degraded and limited
// and back:
//
//   - the cloud stopped → degraded (the sink named in the reasons, cloud
//     sync queued), back to normal once it returns;
//   - limited.cpu set to 5 % (3 % to leave it: the node idles at about 1 % while status is polled twice a second) so that a load enters it → limited in status
//     with its features (sample_50, cached_only), the alert degradation
//     firing (warning), GET /v1/events refused with 503 and Retry-After;
//     every non-critical event not stored is answered as sampled and counted
//     in the loss ledger (status losses) exactly, the critical stream never
//     sampled, a batch taken at limited keeps exactly every other event;
//   - the load stopped → normal: the alert resolved, every event stored.
//
// The five triggers are in status with their actions throughout.
func TestDegradationLevels(t *testing.T) {
	if testing.Short() {
		t.Skip("drives the node's load for several seconds")
	}
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	startCloud := func() *cloud.Server {
		srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: addr})
		require.NoError(t, err)
		return srv
	}
	srv := startCloud()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
cloud:
  url: nats://%s
streams:
  alarm:
    priority: critical
degradation:
  degraded:
    hold: 1s
  limited:
    cpu: 0.05
    cpu_exit: 0.03
    enter_after: 1s
    hold: 3s
`, addr))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "deg-1")
	level := func() string { return degradationStatus(t, p).Degradation.Level }
	waitFor(t, "normal at start", 60*time.Second, func() bool { return level() == "normal" })
	s := degradationStatus(t, p)
	require.Equal(t, map[string]string{"raw_ingestion": "full", "windowing": "all", "alerting": "real_time",
		"cloud_sync": "real_time", "local_queries": "full"}, s.Degradation.Features)
	var metrics []string
	for _, tr := range s.Triggers {
		metrics = append(metrics, tr.Metric+":"+tr.Action)
		require.Contains(t, []string{"up", "down", "steady"}, tr.State)
	}
	require.Equal(t, []string{"cpu:scale_processing_workers", "buffer:sync_more_often", "queue:add_parallel_processors",
		"memory:spill_window_state", "latency:prioritize_fast_path"}, metrics)
	require.True(t, strings.Contains(get(t, p, "/metrics"), `holdfast_trigger_state{metric="cpu"}`), "trigger metrics")

	// The cloud goes away: degraded; back: normal.
	require.NoError(t, srv.Close())
	post(t, p, "application/json", "", []byte(`{"device_id":"d","stream":"temp","value":1}`))
	waitFor(t, "degraded with the cloud away", 60*time.Second, func() bool { return level() == "degraded" })
	s = degradationStatus(t, p)
	require.Contains(t, strings.Join(s.Degradation.Reasons, ";"), "degraded: sink offline: cloud")
	require.Equal(t, "queued", s.Degradation.Features["cloud_sync"])
	require.Equal(t, "full", s.Degradation.Features["raw_ingestion"])
	require.True(t, strings.Contains(get(t, p, "/metrics"), "holdfast_degradation_level 1"), "level metric")
	srv = startCloud()
	defer srv.Close()
	waitFor(t, "normal with the cloud back", 60*time.Second, func() bool { return level() == "normal" })

	// Load: limited.
	var (
		mu                 sync.Mutex
		posted             = map[string]int{}
		accepted, sampled  int
		sampledByStream    = map[string]int{}
		exactHalf, batches int
	)
	send := func(from int) {
		code, r := post(t, p, "application/json", "", alarmBatch(from))
		require.Equal(t, 200, code, "%+v", r)
		mu.Lock()
		defer mu.Unlock()
		posted["temp"] += 90
		posted["alarm"] += 10
		accepted += r.Accepted
		batches++
		n := 0
		for _, rj := range r.Rejected {
			require.Contains(t, rj.Error, "(sampled)", "only sampling keeps events out at limited")
			require.NotEqual(t, 0, rj.Index%10, "the critical stream is never sampled")
			sampledByStream["temp"]++
			n++
		}
		sampled += n
		if n == 45 {
			exactHalf++
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				send(1_000_000*w + 100*i)
			}
		}()
	}
	waitFor(t, "limited under load", 60*time.Second, func() bool { return level() == "limited" })
	s = degradationStatus(t, p)
	require.Equal(t, "sample_50", s.Degradation.Features["raw_ingestion"])
	require.Equal(t, "cached_only", s.Degradation.Features["local_queries"])
	require.Contains(t, strings.Join(s.Degradation.Reasons, ";"), "limited: ")
	resp, err := p.getResp(p.url("/v1/events?stream=temp"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 503, resp.StatusCode, "raw event queries are refused at limited")
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	waitFor(t, "the degradation alert firing", 10*time.Second, func() bool {
		a := alertsOf(t, p, "degradation")
		return len(a) == 1 && strings.HasSuffix(a[0], " firing")
	})
	id := strings.TrimSuffix(alertsOf(t, p, "degradation")[0], " firing")
	require.True(t, strings.HasPrefix(id, "degradation/limited/"), id)
	// Sampling at work for a few seconds.
	waitFor(t, "batches sampled at exactly 50 %", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return exactHalf >= 5
	})
	close(stop)
	wg.Wait()

	// The load stops: back to normal, full ingestion, the alert resolved.
	last := ""
	waitFor(t, "normal once the load stops", 60*time.Second, func() bool {
		s := degradationStatus(t, p)
		if now := fmt.Sprintf("%s %v %+v", s.Degradation.Level, s.Degradation.Reasons, s.Triggers); now != last && s.Degradation.Level != "normal" {
			last = now
			t.Logf("waiting for normal: %s", now) // what holds the level, if it never comes
		}
		if s.Degradation.Level == "normal" {
			return true
		}
		// Status at 50 a second, with the sync holding raw records back at
		// limited, kept the node at 2.6–3.6 % CPU, around the 3 % the level
		// waits for (it stayed limited for a minute once): look less often.
		time.Sleep(500 * time.Millisecond)
		return false
	})
	waitFor(t, "the degradation alert resolved", 10*time.Second, func() bool {
		a := alertsOf(t, p, "degradation")
		return len(a) == 1 && a[0] == id+" resolved"
	})
	before := accepted
	send(5_000_000)
	require.Equal(t, 100, accepted-before, "full ingestion after the step down")

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d batches, %d events accepted, %d sampled, %d batches at exactly 50 %%", batches, accepted, sampled, exactHalf)
	require.Positive(t, sampled)
	require.Equal(t, posted["temp"]+posted["alarm"], accepted+sampled, "every event accepted or answered as sampled")
	s = degradationStatus(t, p)
	require.Equal(t, uint64(sampledByStream["temp"]), s.Losses["sampled"]["temp"], "every sampled event in the loss ledger")
	require.Zero(t, s.Losses["sampled"]["alarm"])
	require.Len(t, allEvents(t, p, "&stream=alarm"), posted["alarm"], "every critical event stored")
}

// TestDegradationMinimal forces minimal with a CPU threshold set low under
// minimal (5 %, left below 3 %) and checks its row through the real binary:
// critical streams only (the others refused, an all-refused batch answered
// 507 with Retry-After, every refusal in the loss ledger), cloud sync paused
// (the sink's cursor stands while critical events are stored), local queries
// disabled (503), the alert degradation firing as critical. Once the load
// stops: normal, the alert resolved, and the sync resumes where it stopped —
// every event accepted reaches the cloud.
func TestDegradationMinimal(t *testing.T) {
	if testing.Short() {
		t.Skip("drives the node's load for several seconds")
	}
	dir := t.TempDir()
	srv := localCloud(t, dir)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
cloud:
  url: %s
streams:
  alarm:
    priority: critical
degradation:
  minimal:
    cpu: 0.05
    cpu_exit: 0.03
    enter_after: 1s
    hold: 3s
`, srv.URL()))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "deg-2")
	level := func() string { return degradationStatus(t, p).Degradation.Level }
	waitFor(t, "normal at start", 60*time.Second, func() bool { return level() == "normal" })

	var (
		mu                sync.Mutex
		accepted, refused int
	)
	send := func(from int) {
		code, r := post(t, p, "application/json", "", alarmBatch(from))
		require.Equal(t, 200, code, "%+v", r)
		mu.Lock()
		defer mu.Unlock()
		accepted += r.Accepted
		for _, rj := range r.Rejected {
			require.Contains(t, rj.Error, "(refused)", "only refusals at minimal")
			require.NotEqual(t, 0, rj.Index%10, "the critical stream is never refused")
			refused++
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			send(100 * i)
		}
	}()
	waitFor(t, "minimal under load", 60*time.Second, func() bool { return level() == "minimal" })
	s := degradationStatus(t, p)
	require.Equal(t, "critical_only", s.Degradation.Features["raw_ingestion"])
	require.Equal(t, "disabled", s.Degradation.Features["cloud_sync"])
	require.Equal(t, "disabled", s.Degradation.Features["local_queries"])
	require.Contains(t, strings.Join(s.Degradation.Reasons, ";"), "minimal: cpu ")

	// A batch of a non-critical stream only: 507, Retry-After.
	resp, err := http.Post(p.url("/v1/events"), "application/json",
		strings.NewReader(`[{"device_id":"x","stream":"temp","value":1},{"device_id":"x","stream":"temp","value":2}]`))
	require.NoError(t, err)
	resp.Body.Close()
	if level() == "minimal" {
		require.Equal(t, http.StatusInsufficientStorage, resp.StatusCode)
		require.NotEmpty(t, resp.Header.Get("Retry-After"))
		mu.Lock()
		refused += 2
		mu.Unlock()
	}
	for _, q := range []string{"/v1/events?stream=alarm", "/v1/windows?size=1m"} {
		resp, err := p.getResp(p.url(q))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, q)
	}
	// The sync stands while critical events are stored.
	waitFor(t, "the sync paused", 10*time.Second, func() bool {
		a := sinkOf(t, p)
		time.Sleep(1500 * time.Millisecond)
		b := sinkOf(t, p)
		return level() == "minimal" && a.Synced == b.Synced && b.Lag > a.Lag
	})
	waitFor(t, "the degradation alert firing", 10*time.Second, func() bool {
		a := alertsOf(t, p, "degradation")
		return len(a) == 1 && strings.HasPrefix(a[0], "degradation/minimal/") && strings.HasSuffix(a[0], " firing")
	})
	require.Contains(t, get(t, p, "/v1/alerts?severity=critical"), `"degradation"`)
	close(stop)
	<-done

	last := ""
	waitFor(t, "normal once the load stops", 60*time.Second, func() bool {
		s := degradationStatus(t, p)
		if now := fmt.Sprintf("%s %v %+v", s.Degradation.Level, s.Degradation.Reasons, s.Triggers); now != last && s.Degradation.Level != "normal" {
			last = now
			t.Logf("waiting for normal: %s", now) // what holds the level, if it never comes
		}
		if s.Degradation.Level == "normal" {
			return true
		}
		// Status at 50 a second with a sync backlog costs more CPU than
		// the 3 % the level waits for: look less often.
		time.Sleep(500 * time.Millisecond)
		return false
	})
	waitFor(t, "the degradation alert resolved", 10*time.Second, func() bool {
		a := alertsOf(t, p, "degradation")
		return len(a) == 1 && strings.HasSuffix(a[0], " resolved")
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d events accepted, %d refused", accepted, refused)
	require.Positive(t, refused)
	waitFor(t, "every accepted event in the cloud after the resume", 60*time.Second, func() bool {
		got := map[uint64]bool{}
		cloudMessagesOffsets(t, srv.URL(), cloud.StreamEvents, "deg-2", got)
		return len(got) == accepted
	})
	s = degradationStatus(t, p)
	require.Equal(t, uint64(refused), s.Losses["refused"]["temp"], "every refused event in the loss ledger")
	require.Zero(t, s.Losses["refused"]["alarm"])
}

// alarmBatch is a JSON batch of 100 events from five devices, values from
// on, every tenth on the critical stream alarm (oneIn10), the others on temp.
func alarmBatch(from int) []byte {
	var b strings.Builder
	b.WriteString("[")
	for i := range 100 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"device_id":"d%d","stream":%q,"value":%d}`, i%5, oneIn10(i), from+i)
	}
	b.WriteString("]")
	return []byte(b.String())
}

// postLoad starts posters goroutines, poster g posting for its i-th request
// a JSON array of n events, event(g, i, j) giving the j-th, until the
// returned stop is called; stop waits for them and may be called more than
// once. answer, if set, is told each response; one it does not take (it
// returns false) ends that poster.
func postLoad(t *testing.T, p *proc, posters, n int, event func(g, i, j int) string, answer func(code int, r ingestResponse) bool) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range posters {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				var b strings.Builder
				b.WriteString("[")
				for j := range n {
					if j > 0 {
						b.WriteString(",")
					}
					b.WriteString(event(g, i, j))
				}
				b.WriteString("]")
				code, r := post(t, p, "application/json", "", []byte(b.String()))
				if answer != nil && !answer(code, r) {
					return
				}
			}
		})
	}
	return sync.OnceFunc(func() { close(done); wg.Wait() })
}

// answeredOK is a postLoad answer that takes only 200s.
func answeredOK(t *testing.T) func(int, ingestResponse) bool {
	return func(code int, r ingestResponse) bool {
		if code != 200 {
			t.Errorf("post: %d %+v", code, r)
			return false
		}
		return true
	}
}
