package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClockOffsetFromLocalCloud: a node syncing to a cloud on the same
// machine shows, after its first confirmed batch, an offset from the cloud's
// clock within 100 ms of the truth, which is zero: both read one clock. No
// jump is seen and clock-offset does not fire.
func TestClockOffsetFromLocalCloud(t *testing.T) {
	dir := t.TempDir()
	srv := localCloud(t, dir)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf("cloud:\n  url: %s\n", srv.URL()))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "clock-1")

	code, r := post(t, p, "application/json", "", []byte(`{"device_id":"d1","stream":"temp","value":21.5}`))
	require.Equal(t, 200, code, "%+v", r)

	type clockStatus struct {
		OffsetMS         *int64  `json:"offset_ms"`
		OffsetErrorMS    *int64  `json:"offset_error_ms"`
		OffsetMeasuredAt *string `json:"offset_measured_at"`
		MaxOffsetMS      int64   `json:"max_offset_ms"`
		Jumps            uint64  `json:"jumps"`
		LastJump         any     `json:"last_jump"`
	}
	var st struct {
		Clock        *clockStatus `json:"clock"`
		FiringAlerts []struct {
			Rule string `json:"rule"`
		} `json:"firing_alerts"`
	}
	waitFor(t, "the offset from the cloud in status", 30*time.Second, func() bool {
		resp, err := http.Get(p.url("/v1/status"))
		require.NoError(t, err)
		defer resp.Body.Close()
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
		return st.Clock != nil && st.Clock.OffsetMS != nil
	})
	c := st.Clock
	t.Logf("offset from the local cloud: %d ms ± %d ms, measured at %s", *c.OffsetMS, *c.OffsetErrorMS, *c.OffsetMeasuredAt)
	require.Less(t, absMS(*c.OffsetMS), int64(100), "the truth is 0 on one machine")
	require.NotNil(t, c.OffsetErrorMS)
	require.Less(t, *c.OffsetErrorMS, int64(100))
	at, err := time.Parse(time.RFC3339Nano, *c.OffsetMeasuredAt)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), at, time.Minute)
	require.Equal(t, int64(2000), c.MaxOffsetMS)
	require.Zero(t, c.Jumps)
	require.Nil(t, c.LastJump)
	for _, a := range st.FiringAlerts {
		require.NotEqual(t, "clock-offset", a.Rule)
	}
	p.stop(t)
}

func absMS(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
