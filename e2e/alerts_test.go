package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAlertsReachWebhookAndBackup runs the binary with two rules, a webhook
// that fails its first calls and then accepts, and a backup command. A
// critical alert arrives at the webhook once retried; when the webhook is
// down for good, the critical alert reaches the backup command and a warning
// does not. /v1/alerts shows both episodes, fired and resolved.
func TestAlertsReachWebhookAndBackup(t *testing.T) {
	var mu sync.Mutex
	var received []map[string]any
	failFirst := 2
	down := false
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if down || failFirst > 0 {
			failFirst--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var a map[string]any
		if json.Unmarshal(body, &a) == nil {
			received = append(received, a)
		}
	}))
	defer hook.Close()

	dir := t.TempDir()
	out := filepath.Join(dir, "backup.out")
	script := filepath.Join(dir, "sms.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n{ echo \"$HOLDFAST_ALERT_SEVERITY $HOLDFAST_ALERT_RULE $HOLDFAST_ALERT_STATE\"; cat; echo; } >> "+out+"\n"), 0o700))
	cfg := filepath.Join(dir, "holdfast.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`
alerts:
  rules:
    - {name: freezer-warm, stream: temp, op: ">", threshold: -10, for_count: 3, severity: critical}
    - {name: door-open, stream: door, op: "==", threshold: 1, severity: warning}
  notify:
    webhooks:
      - url: %s
        retry: {initial_interval: 50ms, max_interval: 200ms, max_tries: 4}
    backup:
      path: %s
`, hook.URL, script)), 0o600))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg)

	send := func(stream string, values ...float64) {
		t.Helper()
		var lines []string
		for i, v := range values {
			lines = append(lines, fmt.Sprintf(`{"device_id":"freezer-1","stream":"%s","ts":%d,"value":%v}`,
				stream, time.Now().UnixMilli()-int64(len(values)-i), v))
		}
		status, r := post(t, p, "application/x-ndjson", "", []byte(strings.Join(lines, "\n")))
		require.Equal(t, 200, status, "%+v", r)
	}

	// Two warm readings do not fire (for_count 3); the third does, once; more
	// warm readings are suppressed; a cold one resolves it.
	send("temp", -18, -5, -4)
	send("temp", -3, -2, -1, -20)
	waitFor(t, "webhook to receive fire and resolve", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(received) >= 2
	})
	mu.Lock()
	require.Len(t, received, 2, "one fire and one resolve; repeats suppressed")
	require.Equal(t, "firing", received[0]["state"])
	require.Equal(t, "resolved", received[1]["state"])
	require.Equal(t, "freezer-warm", received[0]["rule"])
	require.Equal(t, received[0]["id"], received[1]["id"])
	require.EqualValues(t, -3, received[0]["value"], "fired by the third warm reading in a row")
	down = true
	mu.Unlock()
	// Every primary (the log, the webhook after retries, MQTT on the embedded
	// broker) delivered the first episode: the backup command has not run.
	_, err := os.Stat(out)
	require.True(t, os.IsNotExist(err), "backup command ran although no primary failed")

	// Webhook down for good: the critical alert takes the backup channel, the
	// warning does not.
	send("door", 1)
	send("temp", -1, -1, -1)
	waitFor(t, "backup command to run", 20*time.Second, func() bool {
		b, _ := os.ReadFile(out)
		return strings.Contains(string(b), "critical freezer-warm firing")
	})
	time.Sleep(500 * time.Millisecond) // the warning's retries have run out by now too
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.NotContains(t, string(b), "door-open", "warnings never use the backup channel")
	require.Contains(t, string(b), `"rule":"freezer-warm"`)

	var alerts struct {
		Alerts []map[string]any `json:"alerts"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/alerts")), &alerts))
	states := map[string]int{}
	for _, a := range alerts.Alerts {
		states[fmt.Sprint(a["rule"], " ", a["state"])]++
	}
	require.Equal(t, map[string]int{"freezer-warm resolved": 1, "freezer-warm firing": 1, "door-open firing": 1}, states)
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/alerts?state=firing&severity=critical")), &alerts))
	require.Len(t, alerts.Alerts, 1)
}
