package store

import (
	"fmt"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// BenchmarkOpen measures the index rebuild at start-up: a log of 1 000 000
// events from 100 000 devices, opened b.N times.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	l, err := buffer.Open(buffer.Options{Dir: dir, SegmentBytes: 64 << 20, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	ps := make([][]byte, 0, 1000)
	for i := range 1_000_000 {
		e := event.Event{DeviceID: fmt.Sprintf("sensor-%06d", i%100_000), Stream: "temperature",
			TS: int64(1_790_000_000_000 + i), Received: int64(1_790_000_000_000 + i), Value: float64(i % 97)}
		ps = append(ps, e.AppendBinary(nil))
		if len(ps) == cap(ps) {
			if _, err := l.Append(ps...); err != nil {
				b.Fatal(err)
			}
			ps = ps[:0]
		}
	}
	b.ResetTimer()
	for range b.N {
		if _, err := Open(l, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	l.Close()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ns/record")
}
