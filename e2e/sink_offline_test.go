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

	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// sinkState is a sink's part of /v1/status as these tests read it.
type sinkState struct {
	State     string `json:"state"`
	Breaker   string `json:"breaker"`
	Synced    uint64 `json:"synced_offset"`
	Lag       uint64 `json:"lag_records"`
	LastError string `json:"last_error"`
	Paused    bool   `json:"paused"`
}

func sinkOf(t *testing.T, p *proc) sinkState {
	t.Helper()
	var s struct {
		Sinks []sinkState `json:"sinks"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
	require.Len(t, s.Sinks, 1)
	return s.Sinks[0]
}

// TestSinkOfflineAlertAndFastResume runs the real binary against a cloud
// that goes away for longer than the circuit breaker's open time (30 s)
// while events keep arriving. Offline for cloud.offline_alert_after, the
// sink raises sink-offline, listed by /v1/alerts and delivered to a webhook;
// the loss is logged once, not per retry. Once the cloud is back, the sync
// resumes (every event reaches the cloud) within a generous bound — the
// resume delay is measured and logged — the alert resolves, the recovery is
// logged once with the outage's length, and the last error is gone.
func TestSinkOfflineAlertAndFastResume(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps the cloud away for 35 s")
	}
	t.Parallel()
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	startCloud := func() *cloud.Server {
		srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: addr})
		require.NoError(t, err)
		return srv
	}
	srv := startCloud()
	hook := newHookReceiver(t, true)
	hook.bringUp(t)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
cloud:
  url: nats://%s
  offline_alert_after: 2s
alerts:
  notify:
    webhooks:
      - url: %s
`, addr, hook.url))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "site-4")
	postN := func(from, n int) {
		var b strings.Builder
		b.WriteString("[")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"device_id":"d%d","stream":"temp","value":%d}`, (from+i)%3, from+i)
		}
		b.WriteString("]")
		code, r := post(t, p, "application/json", "", []byte(b.String()))
		require.Equal(t, 200, code, "%+v", r)
	}
	postN(0, 50)
	waitFor(t, "the first events synced", 30*time.Second, func() bool { s := sinkOf(t, p); return s.State == "connected" && s.Lag == 0 })

	// The cloud goes away; events keep arriving.
	require.NoError(t, srv.Close())
	down := time.Now()
	for i := range 5 {
		postN(100+50*i, 50)
		time.Sleep(200 * time.Millisecond)
	}
	waitFor(t, "sink-offline firing", 30*time.Second, func() bool {
		a := alertsOf(t, p, "sink-offline")
		return len(a) == 1 && strings.HasSuffix(a[0], " firing")
	})
	firing := alertsOf(t, p, "sink-offline")[0]
	id := strings.TrimSuffix(firing, " firing")
	require.True(t, strings.HasPrefix(id, "sink-offline/cloud/"), id)
	waitFor(t, "the webhook to get sink-offline", 10*time.Second, func() bool { return len(hook.missing([]string{firing})) == 0 })
	var st struct {
		Problems []string `json:"problems"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &st))
	require.NotEmpty(t, st.Problems, "an outage shows in the status' problems")
	require.Contains(t, get(t, p, "/readyz"), `"ready"`, "a node without its cloud still takes writes")

	// Longer than the breaker's open time: the breaker has opened and the
	// backoff has grown.
	waitFor(t, "the breaker to open", 30*time.Second, func() bool { return sinkOf(t, p).Breaker == "open" })
	time.Sleep(time.Until(down.Add(35 * time.Second)))
	before := sinkOf(t, p)
	require.NotEqual(t, "connected", before.State)
	require.NotEmpty(t, before.LastError)

	srv = startCloud()
	defer srv.Close()
	back := time.Now()
	want := before.Synced + before.Lag
	waitFor(t, "the sync to resume", 10*time.Second, func() bool { return sinkOf(t, p).Synced >= want })
	resumed := time.Since(back)
	t.Logf("sync resumed %v after the cloud returned (breaker open time 30 s, longest backoff 60 s)", resumed.Round(time.Millisecond))

	waitFor(t, "everything in the cloud", 10*time.Second, func() bool {
		got := map[uint64]bool{}
		cloudMessagesOffsets(t, srv.URL(), cloud.StreamEvents, "site-4", got)
		return len(got) == 300
	})
	waitFor(t, "sink-offline resolved", 10*time.Second, func() bool {
		a := alertsOf(t, p, "sink-offline")
		return len(a) == 1 && a[0] == id+" resolved"
	})
	waitFor(t, "the webhook to get the resolve", 10*time.Second, func() bool { return len(hook.missing([]string{id + " resolved"})) == 0 })
	waitFor(t, "connected", 10*time.Second, func() bool { return sinkOf(t, p).State == "connected" })
	require.Empty(t, sinkOf(t, p).LastError, "no stale last error once connected")

	logs := p.logs()
	require.Equal(t, 1, strings.Count(logs, "sink connection lost"), "the loss is logged once:\n%s", logs)
	require.Equal(t, 1, strings.Count(logs, "sink connection restored"), "the recovery is logged once:\n%s", logs)
	require.Zero(t, strings.Count(logs, "sync failed; retrying"), "no line per retry at the default level")
	require.Regexp(t, `sink connection restored; sync resumed" .*sink=cloud outage=\d`, logs)
}
