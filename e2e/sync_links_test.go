package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// TestSyncCloudLinksMetered runs the binary with two links to one cloud: a
// proxy (preferred) and the server's own listener, metered. While the
// preferred path is cut, the metered link carries the critical "door" events
// and the window results but none of the normal "temp" events, the status
// names the metered link and the normal lane's lag grows; once the path is
// back, the node returns to it and the held events follow: the cloud holds
// every event and window once.
func TestSyncCloudLinksMetered(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := localCloud(t, dir)
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	// Stopped and started again on its address: from below the ephemeral
	// range, which the connections of the tests running beside this one
	// could take meanwhile.
	proxy := toxiproxy.NewProxy(api, "wired", testutil.FreeAddr(t), strings.TrimPrefix(srv.URL(), "nats://"))
	require.NoError(t, proxy.Start())
	defer proxy.Stop()

	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`windows:
  sizes: [1s]
  allowed_lateness: 100ms
streams:
  door: {priority: critical}
cloud:
  max_delay: 20ms
  links:
    - url: nats://%s
    - url: %s
      metered: true
`, proxy.Listen, srv.URL()))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "edge-l")

	sinkStatus := func() uplink.SinkStatus {
		var s struct {
			Sinks []uplink.SinkStatus `json:"sinks"`
		}
		require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
		require.Len(t, s.Sinks, 1)
		return s.Sinks[0]
	}
	// post sends 10 temp events and one door event stamped now.
	n := 0
	post10 := func(tag string) {
		var body bytes.Buffer
		now := time.Now().UnixMilli()
		for i := range 11 {
			stream := "temp"
			if i == 10 {
				stream = "door"
			}
			fmt.Fprintf(&body, `{"id":"%s-%s-%d","device_id":"d%d","stream":%q,"ts":%d,"value":%d}`+"\n",
				tag, stream, n, i%3, stream, now, n)
			n++
		}
		code, r := post(t, p, "application/x-ndjson", "", body.Bytes())
		require.Equal(t, 200, code, "%+v", r)
	}
	inCloud := func() received {
		r := newReceived()
		cloudMessages(t, &r, srv.URL(), cloud.StreamEvents, "edge-l")
		cloudMessages(t, &r, srv.URL(), cloud.StreamResults, "edge-l")
		return r
	}
	byTag := func(r received, prefix string) int {
		c := 0
		for _, id := range r.eventID {
			if strings.HasPrefix(id, prefix) {
				c++
			}
		}
		return c
	}

	for range 5 {
		post10("before")
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, "the first events in the cloud", 20*time.Second, func() bool { return byTag(inCloud(), "before-") == 55 })
	require.Equal(t, uplink.LinkStatus{URL: "nats://" + proxy.Listen, Metered: false}, *sinkStatus().Link)
	require.Contains(t, get(t, p, "/metrics"), fmt.Sprintf(`holdfast_sync_link{link="nats://%s",sink="cloud"} 1`, proxy.Listen))

	proxy.Stop()
	windowsBefore := len(inCloud().windows)
	cutEnd := time.Now().Add(3 * time.Second)
	for time.Now().Before(cutEnd) {
		post10("cut")
		time.Sleep(200 * time.Millisecond)
	}
	waitFor(t, "the door events and new windows over the metered link", 20*time.Second, func() bool {
		r := inCloud()
		return byTag(r, "cut-door-") == n/11-5 && len(r.windows) > windowsBefore
	})
	r := inCloud()
	require.Zero(t, byTag(r, "cut-temp-"), "normal events went over the metered link")
	st := sinkStatus()
	require.Equal(t, uplink.LinkStatus{URL: srv.URL(), Metered: true}, *st.Link)
	for _, l := range st.Lanes {
		if l.Lane == "normal" {
			require.GreaterOrEqual(t, l.LagRecords, uint64(10*(n/11-5)), "%+v", st)
		}
	}
	require.Contains(t, get(t, p, "/metrics"), fmt.Sprintf(`holdfast_sync_link{link=%q,sink="cloud"} 1`, srv.URL()))

	require.NoError(t, proxy.Start())
	post10("after")
	waitFor(t, "back on the preferred link, everything synced", 30*time.Second, func() bool {
		st := sinkStatus()
		return st.Link != nil && !st.Link.Metered && st.LagRecords == 0
	})
	r = inCloud()
	require.Equal(t, n, len(r.events))
	for off, c := range r.events {
		require.Equal(t, 1, c, "event at offset %d stored %d times", off, c)
	}
	for id, c := range r.windows {
		require.Equal(t, 1, c, "window %s stored %d times", id, c)
	}
	p.stop(t)
}
