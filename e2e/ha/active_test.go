package ha

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// activeConfig is an active-active node's config: the windows of the
// passive pair's tests, no cloud.
const activeConfig = `
windows:
  sizes: [1s, 5s]
  allowed_lateness: 500ms
  idle_timeout: 1h
ha:
  mode: active-active
  advertise: ` + noRoute + "\n"

// TestHAActiveActive runs two nodes that both take devices, each with its
// own log and node id, the same devices writing to both. GET /v1/windows on
// either node must equal a brute-force merge of both nodes' events, window
// by window; with one node killed the other still answers (from itself,
// marked partial) and still takes events.
func TestHAActiveActive(t *testing.T) {
	if testing.Short() {
		t.Skip("HA test skipped in -short mode")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(activeConfig), 0o600))
	a := &member{name: "a", dir: filepath.Join(dir, "a"), http: freeAddr(t), mqtt: freeAddr(t), link: freeAddr(t)}
	b := &member{name: "b", dir: filepath.Join(dir, "b"), http: freeAddr(t), mqtt: freeAddr(t), link: freeAddr(t)}
	a.peers, b.peers = []string{b.link}, []string{a.link}
	a.args = []string{"--config", cfg, "--node-id", "site-1a"}
	b.args = []string{"--config", cfg, "--node-id", "site-1b"}
	a.start(t)
	b.start(t)

	// The same devices on both nodes, at event times that never coincide
	// between the nodes, with whole values (exact sums in any order).
	base := time.Now().Add(-time.Minute).UnixMilli()
	const n = 1500
	send := func(m *member, offset int64, from, to int) {
		var body bytes.Buffer
		for i := from; i < to; i++ {
			fmt.Fprintf(&body, `{"id":"%s-%d","device_id":"d%d","stream":"temp","ts":%d,"value":%d}`+"\n",
				m.name, i, i%4, base+10*int64(i)+offset, (i*7+int(offset))%100)
		}
		resp, err := http.Post("http://"+m.http+"/v1/events", "application/x-ndjson", &body)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode)
	}
	for i := 0; i < n; i += 100 {
		send(a, 0, i, i+100)
		send(b, 5, i, i+100)
	}
	// One event far ahead on each node closes every earlier window on both.
	send(a, 0, n+6000, n+6001)
	send(b, 5, n+6000, n+6001)

	want := testutil.MergeRecomputed(recomputeNode(t, a), recomputeNode(t, b))
	var ga, gb []testutil.WindowJSON
	deadline := time.Now().Add(30 * time.Second)
	for {
		ga, gb = finalWindows(t, a), finalWindows(t, b)
		if len(ga) == len(want) && len(gb) == len(want) {
			break
		}
		require.True(t, time.Now().Before(deadline), "site-wide final windows: a %d, b %d, brute force %d", len(ga), len(gb), len(want))
		time.Sleep(100 * time.Millisecond)
	}
	testutil.RequireWindowsEqual(t, want, ga)
	testutil.RequireWindowsEqual(t, want, gb)
	t.Logf("%d site-wide windows from either node equal the brute-force merge of both nodes' events", len(want))

	// One node lost: the other answers from itself, says so, and takes events.
	b.kill()
	var page struct {
		Windows   []testutil.WindowJSON `json:"windows"`
		Partial   bool                  `json:"partial"`
		PeerError string                `json:"peer_error"`
	}
	getJSON(t, "http://"+a.http+"/v1/windows?device_id=*&limit=100", &page)
	require.True(t, page.Partial, "the answer without the peer is not marked partial")
	require.NotEmpty(t, page.PeerError)
	require.NotEmpty(t, page.Windows)
	send(a, 0, n+6001, n+6002)
	s, err := a.status()
	require.NoError(t, err)
	require.Equal(t, "active", s.HA.Role)
}

// recomputeNode recomputes the closed windows of one node's own events.
func recomputeNode(t *testing.T, m *member) map[string]*testutil.Recomputed {
	t.Helper()
	return testutil.RecomputeWindows(t, allEvents(t, m), []time.Duration{time.Second, 5 * time.Second}, 500*time.Millisecond)
}
