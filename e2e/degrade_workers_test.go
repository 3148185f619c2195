package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

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
	waitFor(t, "one worker while idle", 30*time.Second, func() bool { return processingOf(t, p).Workers == 1 })

	base := time.Now().Add(-2 * time.Hour).Truncate(10 * time.Second).UnixMilli()
	// Each poster its own devices, each device's ts rising.
	stopLoad := postLoad(t, p, 4, 200, func(g, i, j int) string {
		return fmt.Sprintf(`{"device_id":"g%d-%d","stream":"temp","ts":%d,"value":%d}`, g, j%10, base+int64(i*20+j/10), (i+j)%89)
	}, answeredOK(t))
	defer stopLoad()
	waitFor(t, "two workers under a queue", 60*time.Second, func() bool { return processingOf(t, p).Workers == 2 })
	stopLoad()
	waitFor(t, "processing caught up", 60*time.Second, func() bool { return processingOf(t, p).Lag == 0 })

	raw := rawEvents(t, p, "&stream=temp")
	want := testutil.RecomputeWindows(t, raw, []time.Duration{time.Second, 5 * time.Second}, 0)
	require.NotEmpty(t, want)
	waitFor(t, "every closed window written", 30*time.Second, func() bool {
		return len(streamWindows(t, p, "temp")) >= len(want)
	})
	testutil.RequireWindowsEqual(t, want, streamWindows(t, p, "temp"))
}
