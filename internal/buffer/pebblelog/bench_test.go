package pebblelog

import (
	"fmt"
	"sync"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// BenchmarkAppend measures durable (WAL fsync'd) append throughput on the real
// disk: `appenders` goroutines each append `batch` 48-byte records per call, the
// shape of MQTT publishes (batch 1) and HTTP batches (batch 100); compare
// internal/buffer's BenchmarkAppend for the native log.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct{ appenders, batch int }{{1, 1}, {64, 1}, {1000, 1}, {32, 100}} {
		b.Run(fmt.Sprintf("appenders=%d/batch=%d", c.appenders, c.batch), func(b *testing.B) {
			l, err := Open(buffer.Options{Dir: b.TempDir(), MaxBytes: 8 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			rec := make([]byte, 48)
			batch := make([][]byte, c.batch)
			for i := range batch {
				batch[i] = rec
			}
			calls := b.N/c.batch + 1
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range c.appenders {
				n := calls / c.appenders
				if w < calls%c.appenders {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range n {
						if _, err := l.Append(batch...); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(calls*c.batch)/b.Elapsed().Seconds(), "records/s")
			b.SetBytes(48 + recordOverhead)
		})
	}
}
