package store

import (
	"fmt"
	"testing"
	"time"

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

// BenchmarkOpenRecentIDLess measures the rebuild when the whole log lies
// within the dedup window: 1 000 000 id-less events received in the last
// minutes, each of whose contents the rebuild remembers with
// ingest.dedup_without_id: content (the default), against off.
func BenchmarkOpenRecentIDLess(b *testing.B) {
	dir := b.TempDir()
	l, err := buffer.Open(buffer.Options{Dir: dir, SegmentBytes: 64 << 20, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	recent := time.Now().Add(-5 * time.Minute).UnixMilli()
	ps := make([][]byte, 0, 1000)
	for i := range 1_000_000 {
		e := event.Event{DeviceID: fmt.Sprintf("sensor-%06d", i%100_000), Stream: "temperature",
			TS: recent + int64(i/1000), Received: recent + int64(i/1000), Value: float64(i % 97)}
		ps = append(ps, e.AppendBinary(nil))
		if len(ps) == cap(ps) {
			if _, err := l.Append(ps...); err != nil {
				b.Fatal(err)
			}
			ps = ps[:0]
		}
	}
	// Both settings open the same log, alternately, for a ratio that holds
	// on a busy machine.
	var tContent, tOff time.Duration
	b.ResetTimer()
	for n := range b.N {
		for k := range 2 {
			off := (n+k)%2 == 1
			t0 := time.Now()
			s, err := Open(l, Options{NoContentDedup: off})
			if err != nil {
				b.Fatal(err)
			}
			if off {
				tOff += time.Since(t0)
			} else {
				tContent += time.Since(t0)
			}
			if want := map[bool]int{false: 1_000_000, true: 0}[off]; s.dedup.len() != want {
				b.Fatalf("%d keys restored, want %d", s.dedup.len(), want)
			}
		}
	}
	b.ReportMetric(float64(tContent.Milliseconds())/float64(b.N), "content-ms/open")
	b.ReportMetric(float64(tOff.Milliseconds())/float64(b.N), "off-ms/open")
	b.ReportMetric(float64(tContent)/float64(tOff), "content/off")
}
