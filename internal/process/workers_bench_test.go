package process

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
)

// BenchmarkQueueDrainByWorkers measures what the queue and CPU triggers'
// action changes: how fast the processor works off a queue of 200 000
// events (800 devices over 16 streams, the default windows) with one worker and
// with two, the counts the triggers switch between on a two-core machine.
// records/s is the figure; compare the two in one run.
func BenchmarkQueueDrainByWorkers(b *testing.B) {
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) { drain(b, 16, workers) })
	}
}

// drain measures how fast a processor of workers works off a queue of
// 200 000 events from 800 devices spread over streams, the default windows.
func drain(b *testing.B, streams, workers int) {
	drainOf(b, func(i int) (string, string) { return fmt.Sprint("s", i%streams), fmt.Sprint("d", i%800) }, workers, false)
}

// drainOf is drain of the events of, split or not.
func drainOf(b *testing.B, of func(i int) (stream, device string), workers int, split bool) {
	const events = 200_000
	var took time.Duration
	for range b.N {
		l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: vfs.NewMem(), MaxBytes: 1 << 32})
		if err != nil {
			b.Fatal(err)
		}
		st, err := store.Open(l, store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixMilli()
		batch := make([]event.Event, 0, 1000)
		for i := range events {
			stream, device := of(i)
			batch = append(batch, event.Event{DeviceID: device, Stream: stream, TS: at + int64(i), Value: float64(i % 97)})
			if len(batch) == cap(batch) {
				if _, err := st.Append(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		end := l.DurableOffset()
		p, err := New(st, Options{Workers: workers, IdleTimeout: time.Hour, SplitAll: split})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		p.Start()
		for p.Status().Processed < end {
			time.Sleep(time.Millisecond)
		}
		took += time.Since(start)
		p.Close()
		l.Close()
	}
	b.ReportMetric(float64(events)*float64(b.N)/took.Seconds(), "records/s")
}

// BenchmarkQueueDrainSkew is the skew benchmark of hot-spot splitting: two
// workers work off a queue of 200 000 events (800 devices, the default
// windows) with the hot stream unsplit and split, in one run:
//
//	key skew     one stream; one device sends half of the events
//	stream skew  one stream takes 90 % of the events, 9 others the rest
func BenchmarkQueueDrainSkew(b *testing.B) {
	keySkew := func(i int) (stream, device string) {
		if i%2 == 0 {
			return "hot", "d0"
		}
		return "hot", fmt.Sprint("d", i%800)
	}
	streamSkew := func(i int) (stream, device string) {
		if i%10 != 0 {
			return "hot", fmt.Sprint("d", i%800)
		}
		return fmt.Sprint("s", i/10%9), fmt.Sprint("d", i%800)
	}
	for _, w := range []struct {
		name string
		of   func(int) (string, string)
	}{{"key_skew", keySkew}, {"stream_skew", streamSkew}} {
		for _, split := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/split=%v", w.name, split), func(b *testing.B) {
				drainOf(b, w.of, 2, split)
			})
		}
	}
}
