package window

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// BenchmarkAdd feeds an Engine with default options the traffic of 4 streams
// with devices/4 devices each (keys=100000 is the target shape), every device
// reporting once per second of event time in a shuffled order, timestamps
// jittered by up to ±0.5s, values around a per-device level. Each event counts
// in 6 windows (3 sizes, device and site-wide). Device ids are separate string
// copies per event, as a processor decoding log records passes them. The timer
// covers steady state: every key exists, windows of every size are open and
// 1-minute windows close as the watermark passes them.
//
//	go test ./internal/window/ -run '^$' -bench BenchmarkAdd -cpu 1 -benchtime 20000000x
func BenchmarkAdd(b *testing.B) {
	for _, keys := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) { benchmarkAdd(b, keys) })
	}
}

func benchmarkAdd(b *testing.B, keys int) {
	const (
		streams       = 4
		seconds       = 10 // event time covered by one lap of the pregenerated events
		lapMs         = seconds * 1000
		t0      int64 = 1_767_225_600_000 // 2026-01-01
	)
	devices := keys / streams
	perLap := keys * seconds
	rng := rand.New(rand.NewPCG(1, 2))
	streamNames := []string{"temperature", "humidity", "pressure", "power"}
	devNames := make([]string, devices)
	for i := range devNames {
		devNames[i] = fmt.Sprintf("device-%06d", i)
	}
	level := make([]float64, keys)
	for i := range level {
		level[i] = 10 + rng.Float64()*30
	}
	type ev struct {
		stream, dev string
		rel         int64
		v           float64
	}
	evs := make([]ev, perLap)
	perm := make([]int, keys)
	for i := range perm {
		perm[i] = i
	}
	for sec := range seconds {
		rng.Shuffle(keys, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		for p, k := range perm {
			evs[sec*keys+p] = ev{
				stream: streamNames[k/devices],
				dev:    strings.Clone(devNames[k%devices]),
				rel:    int64(sec*1000) + rng.Int64N(1000) - 500,
				v:      level[k] + rng.Float64() - 0.5,
			}
		}
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	closed := 0
	e, err := New(Options{OnClose: func(Result) { closed++ }})
	if err != nil {
		b.Fatal(err)
	}
	lap := int64(0)
	run := func(n int) {
		for i := range n {
			j := i % perLap
			if j == 0 && i > 0 {
				lap++
			}
			x := &evs[j]
			e.Add(x.stream, x.dev, t0+lap*lapMs+x.rel, x.v)
		}
		lap++
	}
	run(perLap) // warm up: create every key
	runtime.GC()
	runtime.ReadMemStats(&after)
	closed = 0
	b.ReportAllocs()
	b.ResetTimer()
	run(b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(closed), "closed")
	b.ReportMetric(float64(e.OpenWindows()), "open")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(keys), "heapB/key")
}

// BenchmarkOpenWindowMemory measures the heap an open window costs: devices
// keys of one stream with the default sizes (1m, 5m, 1h), each device sending
// perDevice events spread evenly over spanSec seconds of event time, its
// values those of `holdfast bench ingest` (15.00 to 29.99, two decimals,
// jumping across the range: about 35 sketch buckets at 1%). It reports the
// live heap after the events (a GC first) over the open windows, with
// everything the Engine holds for them counted: keys, their windows and
// sketch stores, the key table and the end index. The shapes: one event per
// window, and the 3 M-record recovery of 100 000 devices (docs/BENCHMARKS.md,
// "Recovery in bounded memory"): 30 events over 150 s, so that each device
// has a minute window open with a few values and a 5-minute and an hour
// window holding merged minutes.
//
//	go test ./internal/window/ -run '^$' -bench BenchmarkOpenWindowMemory -benchtime 1x
func BenchmarkOpenWindowMemory(b *testing.B) {
	for _, c := range []struct {
		name               string
		perDevice, spanSec int
	}{
		{"events=1", 1, 1},
		{"events=30", 30, 150},
		{"events=600", 600, 600},
	} {
		b.Run(c.name, func(b *testing.B) { benchmarkOpenWindowMemory(b, 100_000, c.perDevice, c.spanSec) })
	}
}

func benchmarkOpenWindowMemory(b *testing.B, devices, perDevice, spanSec int) {
	const t0 int64 = 1_767_225_600_000 + 10*60_000 // 2026-01-01 00:10
	names := make([]string, devices)
	for i := range names {
		names[i] = fmt.Sprintf("dev-%06d", i+1)
	}
	total := devices * perDevice
	step := int64(spanSec) * 1000 * 1000 / int64(total) // µs of event time per event
	var perWindow, open float64
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e, err := New(Options{})
		if err != nil {
			b.Fatal(err)
		}
		for n := range total {
			d, seq := n%devices, uint64(n/devices)
			v := float64(1500+(seq*37+uint64(d)*11)%1500) / 100
			e.Add("temperature", names[d], t0+int64(n)*step/1000, v)
		}
		o := e.OpenWindows()
		runtime.GC()
		runtime.ReadMemStats(&after)
		open = float64(o)
		perWindow = float64(after.HeapAlloc-before.HeapAlloc) / open
		runtime.KeepAlive(e)
	}
	b.ReportMetric(perWindow, "B/window")
	b.ReportMetric(open, "open")
}
