package process

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// BenchmarkSpillHeap measures what the memory trigger's action changes: the
// heap in use (after a GC) of one worker holding open windows of
// streams × devices (the default sizes, 1m, 5m and 1h, each device's windows
// holding 12 values), before and after a spill pass that spills every
// stream, and how long the pass and the load back take. Run with
// -benchtime=1x: each iteration builds the state anew.
func BenchmarkSpillHeap(b *testing.B) {
	for _, c := range []struct{ streams, devices int }{{1000, 20}, {100, 500}} {
		b.Run(fmt.Sprintf("streams=%d/devices=%d", c.streams, c.devices), func(b *testing.B) {
			spillHeap(b, c.streams, c.devices)
		})
	}
}

func spillHeap(b *testing.B, streams, devices int) {
	for range b.N {
		p := &Processor{opts: Options{SpillDir: b.TempDir()}.withDefaults()}
		p.spillOn.Store(true)
		w, err := newWorker(p, 0)
		if err != nil {
			b.Fatal(err)
		}
		at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixMilli()
		for s := range streams {
			name := fmt.Sprint("stream-", s)
			w.stream(name)
			for d := range devices {
				dev := fmt.Sprint("device-", d)
				for i := range 12 {
					w.win.Add(name, dev, at+int64(i*1000), float64((s*31+d*7+i)%1000)/10)
				}
			}
		}
		before := heapInUse()
		t0 := time.Now()
		w.spillPass() // clears the touched marks
		w.spillPass()
		spill := time.Since(t0)
		after := heapInUse()
		if n := len(w.spilled); n != streams {
			b.Fatalf("%d of %d streams spilled", n, streams)
		}
		bytes := testutil.ToFloat64(p.opts.Metrics.SpillBytes)
		t0 = time.Now()
		w.loadAll()
		load := time.Since(t0)
		b.ReportMetric(float64(before)/(1<<20), "heap-before-MiB")
		b.ReportMetric(float64(after)/(1<<20), "heap-after-MiB")
		b.ReportMetric(bytes/(1<<20), "spill-file-MiB")
		b.ReportMetric(float64(spill.Milliseconds()), "spill-ms")
		b.ReportMetric(float64(load.Milliseconds()), "load-ms")
		w.closeSpill()
		runtime.KeepAlive(w)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
