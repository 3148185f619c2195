package uplink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// freeAddr returns a 127.0.0.1 address nothing listens on, below the
// ephemeral range, so no connection a test makes meanwhile can take it.
func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

func appendEvents(t *testing.T, l *buffer.Log, from, n int) {
	t.Helper()
	for i := from; i < from+n; i += 100 {
		var ps [][]byte
		for j := i; j < min(i+100, from+n); j++ {
			e := event.Event{DeviceID: fmt.Sprint("d", j%5), Stream: "temp", TS: int64(1_700_000_000_000 + j), Value: float64(j)}
			ps = append(ps, e.AppendBinary(nil))
		}
		_, err := l.Append(ps...)
		require.NoError(t, err)
	}
}

// cloudOffsets returns every offset the cloud holds for node, with counts.
func cloudOffsets(t *testing.T, url, node string) map[uint64]int {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	offs, err := cloud.StoredOffsets(context.Background(), js, node, cloud.StreamEvents, 0)
	require.NoError(t, err)
	out := map[uint64]int{}
	for _, o := range offs {
		out[o.Offset]++
	}
	return out
}

func waitSynced(t *testing.T, s *Syncer, l *buffer.Log) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Status().SyncedOffset < l.DurableOffset() {
		require.True(t, time.Now().Before(deadline), "not synced: %+v", s.Status())
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSyncThroughOutagesAndLostCursor syncs a log to an embedded JetStream
// cloud, takes the cloud away while the log grows, brings it back, and then
// replays the sync from a stale cursor long after the de-duplication window
// has passed: the cloud ends up with every record exactly once.
func TestSyncThroughOutagesAndLostCursor(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	startCloud := func() *cloud.Server {
		srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: addr, Duplicates: 200 * time.Millisecond})
		require.NoError(t, err)
		return srv
	}
	srv := startCloud()
	logDir := filepath.Join(dir, "log")
	l, err := buffer.Open(buffer.Options{Dir: logDir})
	require.NoError(t, err)
	newSyncer := func() *Syncer {
		s := NewSyncer(l, NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "edge-1"}), SyncOptions{
			BatchRecords: 500,
			Retry:        RetryOptions{InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond},
			Breaker:      BreakerOptions{OpenTimeout: 200 * time.Millisecond},
		})
		s.Start()
		return s
	}
	s := newSyncer()
	appendEvents(t, l, 0, 3000)
	waitSynced(t, s, l)
	require.Equal(t, Connected, s.Status().State)

	// Keep the cursors as they are now: later, a "crash" loses the progress
	// made after this point.
	stale, err := os.ReadFile(filepath.Join(logDir, "cursors"))
	require.NoError(t, err)

	// Outage: the cloud goes away while events keep arriving.
	require.NoError(t, srv.Close())
	appendEvents(t, l, 3000, 2000)
	deadline := time.Now().Add(30 * time.Second)
	for s.Status().State != Offline {
		require.True(t, time.Now().Before(deadline), "never went offline: %+v", s.Status())
		time.Sleep(10 * time.Millisecond)
	}
	require.NotEmpty(t, s.Status().LastError)
	require.Equal(t, uint64(2000), s.Status().LagRecords)
	srv = startCloud()
	waitSynced(t, s, l)
	require.Equal(t, Connected, s.Status().State)
	require.NoError(t, s.Close())

	// A restart with the stale cursor, well past the dedup window: the resume
	// must find the 2000 records in the stream and send only what is new.
	require.NoError(t, l.Close())
	require.NoError(t, os.WriteFile(filepath.Join(logDir, "cursors"), stale, 0o600))
	l, err = buffer.Open(buffer.Options{Dir: logDir})
	require.NoError(t, err)
	defer l.Close()
	time.Sleep(300 * time.Millisecond)
	appendEvents(t, l, 5000, 500)
	s = newSyncer()
	waitSynced(t, s, l)
	require.NoError(t, s.Close())

	got := cloudOffsets(t, srv.URL(), "edge-1")
	require.Len(t, got, 5500)
	for off := range uint64(5500) {
		require.Equal(t, 1, got[off], "offset %d", off)
	}
	require.NoError(t, srv.Close())
}
