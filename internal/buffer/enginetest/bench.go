package enginetest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// BenchAppend measures an engine's durable append throughput on the real
// disk: `appenders` goroutines each append `batch` 48-byte records per call,
// the shape of MQTT publishes (batch 1) and HTTP batches (batch 100). Every
// engine's BenchmarkAppend runs it, so the figures compare.
func BenchAppend(b *testing.B, open func(dir string) (buffer.Engine, error)) {
	for _, c := range []struct{ appenders, batch int }{{1, 1}, {64, 1}, {1000, 1}, {8, 100}, {32, 100}} {
		b.Run(fmt.Sprintf("appenders=%d/batch=%d", c.appenders, c.batch), func(b *testing.B) {
			l, err := open(b.TempDir())
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
			b.SetBytes(48)
		})
	}
}
