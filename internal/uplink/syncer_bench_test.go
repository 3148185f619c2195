package uplink

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// siteEvents appends n events as a site sends them: 1000 devices, three
// streams each, readings with two decimals wandering around a set point,
// event times a few ms apart and a receive time just after.
func siteEvents(b *testing.B, l *buffer.Log, n int) {
	b.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	streams := []string{"temperature", "humidity", "pressure"}
	base := []float64{21, 45, 1013}
	ts := int64(1_790_000_000_000)
	ps := make([][]byte, 0, 1000)
	for i := range n {
		s := i % 3
		ts += int64(rng.IntN(3))
		e := event.Event{
			DeviceID: fmt.Sprintf("sensor-%04d", rng.IntN(1000)),
			Stream:   streams[s],
			TS:       ts,
			Received: ts + 5 + int64(rng.IntN(20)),
			Value:    math.Round((base[s]+rng.NormFloat64()*2)*100) / 100,
		}
		ps = append(ps, e.AppendBinary(nil))
		if len(ps) == cap(ps) || i == n-1 {
			if _, err := l.Append(ps...); err != nil {
				b.Fatal(err)
			}
			ps = ps[:0]
		}
	}
}

// BenchmarkSyncDrain measures how fast a backlog of events drains to a local
// embedded JetStream (file storage, same machine): b.N events are in the log
// before the syncer starts; the figure is events/s until the last is
// confirmed, and the client's bytes on the wire per event, with the batch
// bodies zstd-compressed (the default) and without.
func BenchmarkSyncDrain(b *testing.B) {
	for _, compress := range []bool{true, false} {
		name := "zstd"
		if !compress {
			name = "raw"
		}
		b.Run(name, func(b *testing.B) {
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
			siteEvents(b, l, b.N)
			stored := l.BytesFrom(0)
			sink := NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "bench", NoCompress: !compress})
			s := NewSyncer(l, sink, SyncOptions{})
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
			b.ReportMetric(float64(stored)/float64(b.N), "log-bytes/event")
		})
	}
}
