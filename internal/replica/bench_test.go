package replica

import (
	"context"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// BenchmarkCatchUp measures how fast a new standby copies a primary's log of
// 200 000 records of 100 bytes over in-process NATS: records/s and MB/s of
// payload, each standby's records fsync'd one reply at a time.
func BenchmarkCatchUp(b *testing.B) {
	const n, size = 200_000, 100
	p := newPair(b, SourceOptions{}, buffer.Options{})
	appendN(b, p.plog, n, size)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		slog := openLog(b, b.TempDir(), buffer.Options{})
		f := NewFollower(p.snc, subject, slog, FollowerOptions{
			NodeID: "site-a", Member: "bench", DataDir: b.TempDir(), Term: func() uint64 { return 3 },
		})
		ctx, cancel := context.WithCancel(context.Background())
		b.StartTimer()
		for slog.NextOffset() < n {
			if err := f.fetch(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		cancel()
		slog.Close()
		b.StartTimer()
	}
	secs := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(n/secs, "records/s")
	b.ReportMetric(n*size/secs/1e6, "MB/s")
}

// BenchmarkSyncAck measures one append acknowledged the sync way, one at a
// time: the primary's Append (its fsync), then WaitReplicated (the standby
// got the record, appended it with its own fsync, and fetched again).
func BenchmarkSyncAck(b *testing.B) {
	p := newPair(b, SourceOptions{}, buffer.Options{})
	p.startFollower(b, FollowerOptions{})
	payload := make([]byte, 100)
	payload[0] = 0x01
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		first, err := p.plog.Append(payload)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.src.WaitReplicated(ctx, first+1); err != nil {
			b.Fatal(err)
		}
	}
}
