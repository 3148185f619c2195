package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHotStreamSplitKeepsWindowsExact drives hot-stream splitting through
// the real binary (windows.split: auto, three workers): one stream takes 95 %
// of the events from 40 devices, five others 1 % each. The node reports the
// stream_skew hot spot, splits the stream across its workers (status
// processing.split_streams; the processor restarts from a checkpoint), and
// every closed 1 s window of the hot stream — per device and site-wide,
// before and after the split — equals a brute-force aggregate of the events
// sent.
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

	type agg struct {
		count      uint64
		sum        float64
		minV, maxV float64
	}
	type winKey struct {
		device string // "" for site-wide
		start  int64
	}
	want := map[winKey]*agg{}
	add := func(device string, start int64, v float64) {
		k := winKey{device, start}
		a := want[k]
		if a == nil {
			a = &agg{minV: v, maxV: v}
			want[k] = a
		}
		a.count++
		a.sum += v
		a.minV, a.maxV = min(a.minV, v), max(a.maxV, v)
	}
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
			v := float64(n % 1000)
			fmt.Fprintf(&b, `{"device_id":%q,"stream":%q,"ts":%d,"value":%v}`, device, stream, ts, v)
			if stream == "hot" {
				start := ts - ts%1000
				add(device, start, v)
				add("", start, v)
			}
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
			Hotspots []struct{ Type, Stream string } `json:"hotspots"`
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
	// The watermark is the last event's time: windows before it are closed.
	last := ts - 5
	closedBefore := last - last%1000
	for k := range want {
		if k.start >= closedBefore {
			delete(want, k) // still open
		}
	}
	var got map[winKey]bool
	waitFor(t, "every closed window of the hot stream", 60*time.Second, func() bool {
		got = map[winKey]bool{}
		for _, w := range getWindows(t, p, "stream=hot&device_id=*&size=1s") {
			if !w.Final {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, w.Start)
			require.NoError(t, err)
			k := winKey{w.DeviceID, at.UnixMilli()}
			a := want[k]
			require.NotNil(t, a, "a window no event was sent for: %+v", k)
			require.Equal(t, a.count, w.Count, "%+v", k)
			require.Equal(t, a.sum, w.Sum, "%+v", k)
			require.Equal(t, a.minV, w.Min, "%+v", k)
			require.Equal(t, a.maxV, w.Max, "%+v", k)
			got[k] = true
		}
		return len(got) == len(want)
	})
	t.Logf("%d events, %d closed windows of the hot stream equal to brute force", n, len(got))
}
