package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"

	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// TestCriticalAlertWhileOffline: with the cloud unreachable the node goes
// offline, keeps ingesting and processing, and a critical alert reaches the
// backup command within a second of the event that fired it — with no
// webhook failing first. Once the cloud is back, the alert reaches it too.
func TestCriticalAlertWhileOffline(t *testing.T) {
	dir := t.TempDir()
	cloudAddr := testutil.FreeAddr(t) // nothing listens there yet: the cloud is down

	out := filepath.Join(dir, "sms.out")
	script := filepath.Join(dir, "sms.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n{ echo \"$HOLDFAST_ALERT_SEVERITY $HOLDFAST_ALERT_RULE $HOLDFAST_ALERT_STATE\"; cat; echo; } >> "+out+"\n"), 0o700))
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
alerts:
  rules:
    - {name: pump-pressure, stream: pressure, op: "<", threshold: 1.0, severity: critical}
  notify:
    backup: {path: %s}
cloud:
  url: nats://%s
`, script, cloudAddr))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "site-9")

	status := func() (state string, lag uint64) {
		var s struct {
			Sinks []struct {
				State string `json:"state"`
				Lag   uint64 `json:"lag_records"`
			} `json:"sinks"`
		}
		resp, err := http.Get(p.url("/v1/status"))
		require.NoError(t, err)
		defer resp.Body.Close()
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&s))
		require.Len(t, s.Sinks, 1)
		return s.Sinks[0].State, s.Sinks[0].Lag
	}
	waitFor(t, "the node to go offline", 30*time.Second, func() bool { st, _ := status(); return st == "offline" })

	// Offline, ingest still works and the alert fires.
	sent := time.Now()
	code, r := post(t, p, "application/json", "", []byte(`{"device_id":"pump-1","stream":"pressure","value":0.4}`))
	require.Equal(t, 200, code, "%+v", r)
	waitFor(t, "the backup command", 10*time.Second, func() bool {
		b, _ := os.ReadFile(out)
		return strings.Contains(string(b), "critical pump-pressure firing")
	})
	took := time.Since(sent)
	t.Logf("critical alert reached the backup command %v after the event was sent", took)
	require.Less(t, took, time.Second, "the backup channel must not wait for a primary to fail")

	// The cloud comes back: the alert and the event reach it.
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: cloudAddr})
	require.NoError(t, err)
	defer srv.Close()
	waitFor(t, "sync after reconnection", 60*time.Second, func() bool {
		st, lag := status()
		return st == "connected" && lag == 0
	})
	got := newReceived()
	cloudMessages(t, &got, srv.URL(), cloud.StreamResults, "site-9")
	cloudMessages(t, &got, srv.URL(), cloud.StreamEvents, "site-9")
	found := false
	for k, n := range got.alerts {
		require.Equal(t, 1, n, "alert record %s", k)
		found = found || (strings.HasPrefix(k, "pump-pressure/") && strings.HasSuffix(k, "/firing"))
	}
	require.True(t, found, "the alert reached the cloud after reconnection")
	require.Len(t, got.events, 1)
}
