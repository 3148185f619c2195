package uplink

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// BenchmarkSyncDrain measures how fast a backlog of events drains to a local
// embedded JetStream (file storage, same machine): b.N events are in the log
// before the syncer starts; the figure is events/s until the last is
// confirmed, and the client's bytes on the wire per event.
func BenchmarkSyncDrain(b *testing.B) {
	dir := b.TempDir()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	l, err := buffer.Open(buffer.Options{Dir: filepath.Join(dir, "log"), SegmentBytes: 64 << 20, MaxBytes: 8 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	t := &testing.T{}
	appendEvents(t, l, 0, b.N)
	sink := NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "bench"})
	s := NewSyncer(l, sink, SyncOptions{BatchRecords: 5000, MaxDelay: time.Millisecond})
	b.ResetTimer()
	s.Start()
	for s.Status().SyncedOffset < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	out := sink.nc.Stats().OutBytes
	s.Close()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(out)/float64(b.N), "wire-bytes/event")
}
