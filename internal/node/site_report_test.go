package node

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/aggregator"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// TestNodeWithAggregator: a node with site.aggregator and cloud.url runs
// the sinks "aggregator" and "cloud", reports to the aggregator, and its
// records reach the cloud once, forwarded.
func TestNodeWithAggregator(t *testing.T) {
	cl, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer cl.Close()
	agg, err := aggregator.Start(aggregator.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		CloudURL: cl.URL(), Secret: "site-secret"})
	require.NoError(t, err)
	defer agg.Close()

	cfg := config.Default()
	cfg.NodeID = "n1"
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Mode = "off"
	cfg.Windows.Enabled = false
	cfg.Cloud.URL = cl.URL()
	cfg.Site.Aggregator = agg.NATSURL()
	cfg.Site.Secret = "site-secret"
	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer n.Close()
	for i := range 100 {
		e := event.Event{DeviceID: "d", Stream: "temp", TS: 1_700_000_000_000 + int64(i), Value: float64(i)}
		_, err := n.buf.Append(e.AppendBinary(nil))
		require.NoError(t, err)
	}
	testutil.Eventually(t, "both sinks synced", func() bool {
		var sinks []uplink.SinkStatus
		for _, s := range n.Status().Sinks {
			sinks = append(sinks, s.(uplink.SinkStatus))
		}
		if len(sinks) != 2 || sinks[0].Sink != "aggregator" || sinks[1].Sink != "cloud" {
			t.Fatalf("sinks %+v", sinks)
		}
		return sinks[0].LagRecords == 0 && sinks[1].LagRecords == 0
	})
	testutil.Eventually(t, "n1 reports to the aggregator", func() bool {
		nodes := agg.Status().Nodes
		return len(nodes) == 1 && nodes[0].NodeID == "n1" && nodes[0].State == "live" && len(nodes[0].Sinks) == 2
	})
	nc, err := nats.Connect(cl.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	testutil.Eventually(t, "every record in the cloud once", func() bool {
		stored, err := cloud.StoredOffsets(context.Background(), js, "n1", cloud.StreamEvents, 0)
		require.NoError(t, err)
		seen := map[uint64]bool{}
		for _, s := range stored {
			require.False(t, seen[s.Offset], "offset %d twice", s.Offset)
			seen[s.Offset] = true
		}
		return len(seen) == 100
	})
}
