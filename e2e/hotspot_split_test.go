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
)

// TestHotStreamSplitKeepsWindowsExact drives hot-stream splitting through
// the real binary (windows.split: auto, three workers): one stream takes 95 %
// of the events from 40 devices, five others 1 % each. The node reports the
// stream_skew hot spot, splits the stream across its workers (status
// processing.split_streams; the processor restarts from a checkpoint), and
// every closed window of the hot stream — per device and site-wide, before
// and after the split — equals a naive recompute of its stored events.
func TestHotStreamSplitKeepsWindowsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("sends a skewed load for several seconds")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, `
windows:
  sizes: [1s, 5s]
  allowed_lateness: 0s
  workers: 3
  split: auto
`)
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "split-1")

	base := time.Now().Add(-2 * time.Hour).Truncate(time.Minute).UnixMilli()
	ts, n := base, 0
	send := func() {
		var b strings.Builder
		b.WriteString("[")
		for i := range 200 {
			if i > 0 {
				b.WriteString(",")
			}
			stream, device := "hot", fmt.Sprintf("h%d", n%40)
			if i%20 == 19 {
				stream, device = fmt.Sprintf("c%d", i/40), "cold"
			}
			fmt.Fprintf(&b, `{"device_id":%q,"stream":%q,"ts":%d,"value":%d}`, device, stream, ts, n%1000)
			ts += 5
			n++
		}
		b.WriteString("]")
		code, r := post(t, p, "application/json", "", []byte(b.String()))
		require.Equal(t, 200, code, "%+v", r)
		require.Equal(t, 200, r.Accepted)
	}
	split := func() []string {
		var s struct {
			Processing struct {
				SplitStreams []string `json:"split_streams"`
			} `json:"processing"`
		}
		require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
		return s.Processing.SplitStreams
	}
	require.Empty(t, split(), "nothing split before a hot spot")
	waitFor(t, "the hot stream split", 60*time.Second, func() bool {
		send()
		return strings.Join(split(), ",") == "hot"
	})
	for range 10 {
		send()
	}
	// Every event stored is the hot stream's history: recomputed naively
	// (testutil.RecomputeWindows), its closed windows must be the node's.
	raw := rawEvents(t, p, "&stream=hot")
	want := testutil.RecomputeWindows(t, raw, []time.Duration{time.Second, 5 * time.Second}, 0)
	waitFor(t, "every closed window of the hot stream", 60*time.Second, func() bool {
		return len(streamWindows(t, p, "hot")) == len(want)
	})
	testutil.RequireWindowsEqual(t, want, streamWindows(t, p, "hot"))
	t.Logf("%d events, %d closed windows of the hot stream equal to the recompute", n, len(want))
}
