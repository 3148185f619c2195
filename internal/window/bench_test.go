package window

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// BenchmarkAdd feeds an Engine with default options the traffic of 100K keys:
// 4 streams × 25K devices, every device reporting once per second of event time
// in a shuffled order, timestamps jittered by up to ±0.5s, values around a
// per-device level. Each event updates 6 windows (3 sizes, device and site).
// The timer covers steady state: keys exist, windows of every size are open and
// 1-minute windows close as the watermark passes them.
//
// "shared" passes the same device id strings the map holds; "decoded" passes a
// separate copy per event, as a processor decoding log records would, so map
// lookups compare the bytes.
//
//	go test ./internal/window/ -run '^$' -bench BenchmarkAdd -cpu 1 -benchtime 30000000x
func BenchmarkAdd(b *testing.B) {
	for _, decoded := range []bool{false, true} {
		name := "shared"
		if decoded {
			name = "decoded"
		}
		b.Run(name, func(b *testing.B) { benchmarkAdd(b, decoded) })
	}
}

func benchmarkAdd(b *testing.B, decoded bool) {
	const (
		streams  = 4
		devices  = 25_000
		keys     = streams * devices
		seconds  = 10 // event time covered by one lap of the pregenerated events
		perLap   = keys * seconds
		lapMs    = seconds * 1000
		t0 int64 = 1_767_225_600_000 // 2026-01-01
	)
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
			dev := devNames[k%devices]
			if decoded {
				dev = strings.Clone(dev)
			}
			evs[sec*keys+p] = ev{
				stream: streamNames[k/devices],
				dev:    dev,
				rel:    int64(sec*1000) + rng.Int64N(1000) - 500,
				v:      level[k] + rng.Float64() - 0.5,
			}
		}
	}

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
	closed = 0
	b.ReportAllocs()
	b.ResetTimer()
	run(b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(closed), "closed")
	b.ReportMetric(float64(e.OpenWindows()), "open")
}
