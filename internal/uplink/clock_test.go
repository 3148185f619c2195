package uplink

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// TestSinkReadsTheCloudsClock: after a confirmed batch the sink reads the
// time the cloud stored it at; on one machine the offset is the clocks'
// truth, zero, within the estimate's bound plus a little. A second batch
// within clockInterval is not measured.
func TestSinkReadsTheCloudsClock(t *testing.T) {
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer srv.Close()
	ctx := context.Background()

	samples := make(chan clock.Sample, 4)
	a := NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "n1", OnClock: func(s clock.Sample) { samples <- s }})
	defer a.Close()
	require.NoError(t, a.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneNormal: 0}, nil))
	before := time.Now()
	require.NoError(t, a.Send(ctx, []Record{eventRecord(0, "door", LaneCritical), eventRecord(1, "temp", LaneNormal)}))
	var s clock.Sample
	select {
	case s = <-samples:
	case <-time.After(waitFor):
		t.Fatal("no clock sample")
	}
	require.False(t, s.Sent.Before(before))
	require.Positive(t, s.RTT)
	require.Less(t, s.Offset().Abs(), s.Error()+5*time.Millisecond, "offset %v, error bound %v", s.Offset(), s.Error())

	require.NoError(t, a.Send(ctx, []Record{eventRecord(2, "door", LaneCritical)}))
	select {
	case s := <-samples:
		t.Fatalf("measured again within %v: %+v", clockInterval, s)
	case <-time.After(200 * time.Millisecond):
	}
}
