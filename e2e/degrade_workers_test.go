package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// processingWorkers is status's processing.workers: the workers running.
func processingWorkers(t *testing.T, p *proc) int {
	t.Helper()
	var st struct {
		Processing struct {
			Workers int `json:"workers"`
		} `json:"processing"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &st))
	return st.Processing.Workers
}

// TestTriggersScaleWorkersThroughTheBinary drives the CPU and queue
// triggers' action through the real binary. The CPU trigger's down threshold
// is set above any idle figure, so an idle node goes down to one worker; the
// queue trigger's up threshold is 10 records, so a burst of posts takes it up
// and the processor back to windows.workers (2). Each change restarts the
// processor from a checkpoint; what it wrote is then checked against a naive
// recompute of the stored events: every closed window equal, none twice.
func TestTriggersScaleWorkersThroughTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("drives the node's load for several seconds")
	}
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, `
windows:
  sizes: [1s, 5s]
  allowed_lateness: 0s
  workers: 2
degradation:
  triggers:
    cpu:
      up: 0.999
      down: 0.99
      up_for: 1h
      down_for: 0s
    queue:
      up: 10
      down: 1
`)
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "scale")
	waitFor(t, "one worker while idle", 30*time.Second, func() bool { return processingWorkers(t, p) == 1 })

	base := time.Now().Add(-2 * time.Hour).Truncate(10 * time.Second).UnixMilli()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var b strings.Builder
				b.WriteString("[")
				for j := range 200 {
					if j > 0 {
						b.WriteString(",")
					}
					// Each poster its own devices, each device's ts rising.
					fmt.Fprintf(&b, `{"device_id":"g%d-%d","stream":"temp","ts":%d,"value":%d}`, g, j%10, base+int64(i*20+j/10), (i+j)%89)
				}
				b.WriteString("]")
				if code, r := post(t, p, "application/json", "", []byte(b.String())); code != 200 {
					t.Errorf("post: %d %+v", code, r)
					return
				}
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	waitFor(t, "two workers under a queue", 60*time.Second, func() bool { return processingWorkers(t, p) == 2 })
	stopLoad()
	waitFor(t, "processing caught up", 60*time.Second, func() bool { return processingLag(t, p) == 0 })

	raw := rawEvents(t, p, "&stream=temp")
	want := testutil.RecomputeWindows(t, raw, []time.Duration{time.Second, 5 * time.Second}, 0)
	require.NotEmpty(t, want)
	waitFor(t, "every closed window written", 30*time.Second, func() bool {
		return len(streamWindows(t, p, "temp")) >= len(want)
	})
	testutil.RequireWindowsEqual(t, want, streamWindows(t, p, "temp"))
}
