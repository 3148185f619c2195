package sqlitelog

import (
	"fmt"
	"sync"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// BenchmarkAppend measures durable (committed, WAL fsync'd) append throughput
// on the real disk: `appenders` goroutines each append `batch` 48-byte records
// per call, as internal/buffer's BenchmarkAppend does for the native log.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct{ appenders, batch int }{{1, 1}, {64, 1}, {1000, 1}, {8, 100}, {32, 100}} {
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
			b.SetBytes(int64(48 + rowOverhead))
		})
	}
}

// BenchmarkRead measures reading 100 000 48-byte records from the start.
func BenchmarkRead(b *testing.B) {
	l, err := Open(buffer.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	batch := make([][]byte, 1000)
	for i := range batch {
		batch[i] = make([]byte, 48)
	}
	for range 100 {
		if _, err := l.Append(batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		r := l.NewReader(0)
		n := 0
		for {
			if _, _, err := r.Next(); err != nil {
				break
			}
			n++
		}
		r.Close()
		if n != 100000 {
			b.Fatalf("read %d records", n)
		}
	}
	b.ReportMetric(float64(100000*b.N)/b.Elapsed().Seconds(), "records/s")
}
