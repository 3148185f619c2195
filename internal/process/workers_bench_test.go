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
			batch = append(batch, event.Event{DeviceID: fmt.Sprint("d", i%800), Stream: fmt.Sprint("s", i%streams),
				TS: at + int64(i), Value: float64(i % 97)})
			if len(batch) == cap(batch) {
				if _, err := st.Append(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		end := l.DurableOffset()
		p, err := New(st, Options{Workers: workers, IdleTimeout: time.Hour})
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

// BenchmarkQueueDrainSkew is the same queue from one stream (stream skew)
// and from 16, with two workers.
func BenchmarkQueueDrainSkew(b *testing.B) {
	for _, streams := range []int{16, 1} {
		b.Run(fmt.Sprintf("streams=%d", streams), func(b *testing.B) {
			drain(b, streams, 2)
		})
	}
}
