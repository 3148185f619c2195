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

// BenchRemove measures what the pressure levels cost an engine: with 1 M
// 48-byte records held, one Remove of every tenth record (downsampling's
// shape, scattered) and one of a tenth of them in one run (dropping the
// oldest 10 %). It reports records removed per second; each op is one
// Remove on a fresh engine.
func BenchRemove(b *testing.B, open func(dir string) (buffer.Engine, error)) {
	const held = 1_000_000
	for _, c := range []struct {
		name string
		offs func(first uint64) []uint64
	}{
		{"every-tenth", func(first uint64) []uint64 {
			out := make([]uint64, 0, held/10)
			for off := first; off < first+held; off += 10 {
				out = append(out, off)
			}
			return out
		}},
		{"oldest-tenth", func(first uint64) []uint64 {
			out := make([]uint64, 0, held/10)
			for off := first; off < first+held/10; off++ {
				out = append(out, off)
			}
			return out
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var removed int
			for b.Loop() {
				b.StopTimer()
				l, err := open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				rec := make([]byte, 48)
				batch := make([][]byte, 1000)
				for i := range batch {
					batch[i] = rec
				}
				for range held / len(batch) {
					if _, err := l.Append(batch...); err != nil {
						b.Fatal(err)
					}
				}
				offs := c.offs(l.FirstOffset())
				b.StartTimer()
				got, err := l.(buffer.Remover).Remove(offs, func(h []uint64) []uint64 { return h })
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				removed += len(got)
				l.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(removed)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
