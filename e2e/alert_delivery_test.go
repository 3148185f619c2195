package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// hookReceiver is a webhook that is down until brought up — answering 503,
// or not listening at all — and records the alerts (id and state) it
// accepted.
type hookReceiver struct {
	srv       *httptest.Server
	url       string
	listening bool // while down: answers 503 (true) or refuses connections
	up        atomic.Bool
	mu        sync.Mutex
	got       map[string]int // "id state" → deliveries; guarded by mu
	attempts  atomic.Int64
}

func newHookReceiver(t *testing.T, listening bool) *hookReceiver {
	h := &hookReceiver{got: map[string]int{}, listening: listening}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.attempts.Add(1)
		if !h.up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var a struct{ ID, State string }
		if err := json.Unmarshal(body, &a); err != nil || a.ID == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.got[a.ID+" "+a.State]++
		h.mu.Unlock()
	}))
	if listening {
		h.url = "http://" + h.srv.Listener.Addr().String()
		h.srv.Start()
	} else {
		// Nothing listens there until bringUp. The address comes from below
		// the ephemeral range: the notifier's own retries, thousands of
		// connects, could otherwise be handed that very port as their source
		// and connect to themselves, and bringUp would find it taken.
		h.srv.Listener.Close()
		h.url = "http://" + testutil.FreeAddr(t)
	}
	t.Cleanup(h.srv.Close)
	return h
}

// bringUp makes the webhook accept alerts.
func (h *hookReceiver) bringUp(t *testing.T) {
	h.up.Store(true)
	if h.listening {
		return
	}
	l, err := net.Listen("tcp", strings.TrimPrefix(h.url, "http://"))
	require.NoError(t, err)
	h.srv.Listener = l
	h.srv.Start()
}

// missing returns the wanted "id state" pairs not received yet.
func (h *hookReceiver) missing(want []string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, w := range want {
		if h.got[w] == 0 {
			out = append(out, w)
		}
	}
	return out
}

// alertsOf returns "id state" of every alert /v1/alerts lists for rule.
func alertsOf(t *testing.T, p *proc, rule string) []string {
	t.Helper()
	var resp struct {
		Alerts []struct{ ID, Rule, State string } `json:"alerts"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/alerts")), &resp))
	var out []string
	for _, a := range resp.Alerts {
		if a.Rule == rule {
			out = append(out, a.ID+" "+a.State)
		}
	}
	return out
}

// episode fires and resolves rule "hot" on device and returns the two
// notifications it must produce ("id firing", "id resolved").
func episode(t *testing.T, p *proc, device string) []string {
	t.Helper()
	now := time.Now().UnixMilli()
	body := fmt.Sprintf(`{"device_id":%q,"stream":"temp","ts":%d,"value":95}`+"\n"+
		`{"device_id":%q,"stream":"temp","ts":%d,"value":20}`, device, now-1, device, now)
	code, r := post(t, p, "application/x-ndjson", "", []byte(body))
	require.Equal(t, 200, code, "%+v", r)
	id := fmt.Sprintf("hot/%s/%d", device, now-1)
	want := []string{id + " firing", id + " resolved"}
	waitFor(t, "the alerts of "+device+" in /v1/alerts", 10*time.Second, func() bool {
		got := alertsOf(t, p, "hot")
		return slices.Contains(got, id+" resolved")
	})
	return want
}

// checkpointsAfter waits until n more checkpoints have been written than the
// log showed when it was called.
func checkpointsAfter(t *testing.T, p *proc, n int) {
	t.Helper()
	before := strings.Count(p.logs(), `msg="checkpoint written"`)
	waitFor(t, "checkpoints", 20*time.Second, func() bool {
		return strings.Count(p.logs(), `msg="checkpoint written"`) >= before+n
	})
}

// testDeliveryAcrossRestart: alerts fire while the webhook is down; the node
// is stopped (by stop) and started again, more alerts fire, and only then does
// the webhook come up. Every alert, firing and resolved, must reach it.
func testDeliveryAcrossRestart(t *testing.T, listening bool, stop func(t *testing.T, p *proc)) {
	hook := newHookReceiver(t, listening)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	// Retries do not run out while the test runs; a checkpoint every second
	// covers the alerts before the node stops, so a restart does not replay
	// them.
	writeFile(t, cfg, fmt.Sprintf(`
alerts:
  rules:
    - {name: hot, stream: temp, op: ">", threshold: 90, severity: warning}
  notify:
    webhooks:
      - url: %s
        retry: {initial_interval: 20ms, max_interval: 200ms, max_tries: 100000}
checkpoints:
  interval: 1s
`, hook.url))
	data := filepath.Join(dir, "data")

	p := start(t, data, "--config", cfg)
	var want []string
	want = append(want, episode(t, p, "d1")...)
	want = append(want, episode(t, p, "d2")...)
	checkpointsAfter(t, p, 1)
	if listening {
		waitFor(t, "the webhook to be tried", 10*time.Second, func() bool { return hook.attempts.Load() > 0 })
	}
	require.Len(t, hook.missing(want), len(want), "the webhook is down")
	stop(t, p)

	p = start(t, data, "--config", cfg)
	want = append(want, episode(t, p, "d3")...)
	checkpointsAfter(t, p, 1)
	require.Len(t, hook.missing(want), len(want), "the webhook is still down")

	require.Positive(t, webhookLag(t, p), "the webhook's notifier is behind while the webhook is down")
	require.Contains(t, get(t, p, "/metrics"), `holdfast_alert_notifier_lag_records{notifier="webhook"}`)

	hook.bringUp(t)
	waitFor(t, "every alert at the webhook", 30*time.Second, func() bool { return len(hook.missing(want)) == 0 })
	waitFor(t, "the webhook's notifier to catch up", 10*time.Second, func() bool { return webhookLag(t, p) == 0 })
	p.stop(t)
}

// webhookLag is the webhook notifier's lag_records in /v1/status.
func webhookLag(t *testing.T, p *proc) uint64 {
	t.Helper()
	var s struct {
		Notifiers []struct {
			Name string `json:"name"`
			Lag  uint64 `json:"lag_records"`
		} `json:"notifiers"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
	for _, n := range s.Notifiers {
		if n.Name == "webhook" {
			return n.Lag
		}
	}
	t.Fatalf("no webhook notifier in /v1/status: %+v", s)
	return 0
}

// TestAlertDeliveryAcrossCleanRestart: alerts not yet delivered when the node
// stops cleanly (the webhook answering 503) are delivered after the next
// start.
func TestAlertDeliveryAcrossCleanRestart(t *testing.T) {
	t.Parallel()
	testDeliveryAcrossRestart(t, true, func(t *testing.T, p *proc) { p.stop(t) })
}

// TestAlertDeliveryAcrossKill: alerts not yet delivered when the node is
// killed (SIGKILL; the webhook answering 503) are delivered after the next
// start, also when a checkpoint written after them means the restart does not
// replay them.
func TestAlertDeliveryAcrossKill(t *testing.T) {
	t.Parallel()
	testDeliveryAcrossRestart(t, true, func(t *testing.T, p *proc) { p.kill() })
}

// TestAlertDeliveryWebhookNotListening: the same across a SIGKILL and a clean
// stop, with nothing listening at the webhook's address until it comes up.
func TestAlertDeliveryWebhookNotListening(t *testing.T) {
	t.Parallel()
	t.Run("kill", func(t *testing.T) {
		testDeliveryAcrossRestart(t, false, func(t *testing.T, p *proc) { p.kill() })
	})
	t.Run("stop", func(t *testing.T) {
		testDeliveryAcrossRestart(t, false, func(t *testing.T, p *proc) { p.stop(t) })
	})
}
