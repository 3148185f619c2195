package pressure

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newDetector(c *fakeClock, bursts func() []Hotspot) *HotspotDetector {
	return NewHotspotDetector(HotspotOptions{Window: time.Minute, now: c.now, Bursts: bursts})
}

func ofType(hs []Hotspot, typ string) []Hotspot {
	var out []Hotspot
	for _, h := range hs {
		if h.Type == typ {
			out = append(out, h)
		}
	}
	return out
}

// TestKeySkew: a device with 30 % of a stream's events is a key_skew hot
// spot, with its share; 100 devices sending evenly are not; nor is a quiet
// stream of a single device below the minimum count.
func TestKeySkew(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_700_000_040, 0)}
	d := newDetector(c, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		if rng.Float64() < 0.3 {
			d.Observe("temp", "hot")
		} else {
			d.Observe("temp", fmt.Sprintf("dev-%d", rng.IntN(100)))
		}
		d.Observe("even", fmt.Sprintf("dev-%d", rng.IntN(100)))
	}
	for range 400 { // about 50 sampled: below the minimum
		d.Observe("quiet", "lonely")
	}
	ks := ofType(d.Hotspots(), KeySkew)
	require.Len(t, ks, 1, "%+v", ks)
	require.Equal(t, "temp", ks[0].Stream)
	require.Equal(t, "hot", ks[0].Key)
	require.InDelta(t, 0.3, ks[0].Share, 0.05)
	require.InDelta(t, ks[0].Share/DefaultKeyShare, ks[0].Ratio, 1e-9)

	// The next window still shows the last one's skew until it holds more.
	c.t = c.t.Add(time.Minute)
	require.Len(t, ofType(d.Hotspots(), KeySkew), 1)
	for range 20_000 {
		d.Observe("temp", fmt.Sprintf("dev-%d", rng.IntN(100)))
	}
	require.Empty(t, ofType(d.Hotspots(), KeySkew))
	// Two windows of silence: the streams are forgotten.
	c.t = c.t.Add(2 * time.Minute)
	require.Empty(t, d.Hotspots())
	n := 0
	d.streams.Range(func(any, any) bool { n++; return true })
	require.Zero(t, n)
}

// TestKeySkewSpaceSaving: with far more devices than the summary holds,
// the heavy device is still found, and no light one is reported.
func TestKeySkewSpaceSaving(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_700_000_040, 0)}
	d := newDetector(c, nil)
	for i := range 100_000 {
		if i%8 == 0 { // 12.5 %
			d.Observe("s", "heavy")
		} else {
			d.Observe("s", fmt.Sprintf("dev-%d", i%10_000))
		}
	}
	ks := d.Hotspots()
	require.Len(t, ks, 1, "%+v", ks)
	require.Equal(t, "heavy", ks[0].Key)
	require.InDelta(t, 0.125, ks[0].Share, 0.015) // sampled: an estimate
}

// TestStreamSkew: one stream at 20× the others' rate among ten is a
// stream_skew hot spot; evenly loaded streams are not.
func TestStreamSkew(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_700_000_040, 0)}
	d := newDetector(c, nil)
	for i := range 9 {
		for j := range 1000 {
			d.Observe(fmt.Sprintf("s%d", i), fmt.Sprintf("d%d", j))
		}
	}
	require.Empty(t, d.Hotspots())
	d.ObserveAll(20_000, func(i int) (string, string) { return "busy", fmt.Sprintf("d%d", i%100) })
	ss := ofType(d.Hotspots(), StreamSkew)
	require.Len(t, ss, 1)
	require.Equal(t, "busy", ss[0].Stream)
	require.InDelta(t, 20_000.0/29_000, ss[0].Share, 1e-9)
	require.InDelta(t, 20_000/(29_000.0/10), ss[0].Ratio, 1e-9)
}

// TestHotspotsMetric: holdfast_hotspots{type} counts the hot spots by type,
// device bursts included, and status gets [] rather than null.
func TestHotspotsMetric(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_700_000_040, 0)}
	var bursts []Hotspot
	d := newDetector(c, func() []Hotspot { return bursts })
	require.NotNil(t, d.Hotspots())
	reg := prometheus.NewRegistry()
	reg.MustRegister(d)
	for range 2000 {
		d.Observe("s", "only")
	}
	bursts = []Hotspot{{Type: DeviceBurst, Stream: "s", Key: "only", Share: 0.9, Ratio: 20}}
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP holdfast_hotspots Hot spots seen now, by type: key_skew, stream_skew, device_burst (as /v1/status lists them).
# TYPE holdfast_hotspots gauge
holdfast_hotspots{type="device_burst"} 1
holdfast_hotspots{type="key_skew"} 1
holdfast_hotspots{type="stream_skew"} 0
`)))
	hs := d.Hotspots()
	require.Equal(t, KeySkew, hs[0].Type)
	require.Equal(t, DeviceBurst, hs[1].Type)
}

// BenchmarkObserve is the detector's cost per event, to hold against a
// buffer append (~1 µs per record at best, internal/buffer BenchmarkAppend).
func BenchmarkObserve(b *testing.B) {
	devs := make([]string, 1000)
	for i := range devs {
		devs[i] = fmt.Sprintf("device-%d", i)
	}
	b.Run("one", func(b *testing.B) {
		d := NewHotspotDetector(HotspotOptions{})
		i := 0
		for b.Loop() {
			d.Observe("temp", devs[i%len(devs)])
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		d := NewHotspotDetector(HotspotOptions{})
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				d.Observe("temp", devs[i%len(devs)])
				i++
			}
		})
	})
	b.Run("batch500", func(b *testing.B) {
		d := NewHotspotDetector(HotspotOptions{})
		for b.Loop() {
			d.ObserveAll(500, func(i int) (string, string) { return "temp", devs[i%len(devs)] })
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/event")
	})
}

// TestHotspotsConcurrent: observers and readers at once (run with -race);
// every event is counted.
func TestHotspotsConcurrent(t *testing.T) {
	d := NewHotspotDetector(HotspotOptions{Window: time.Hour})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 5000 {
				d.Observe(fmt.Sprintf("s%d", i%3), fmt.Sprintf("d%d", g))
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			d.Hotspots()
		}
	})
	wg.Wait()
	var n int64
	d.streams.Range(func(_, v any) bool {
		sc := v.(*streamCounts)
		sc.mu.Lock()
		n += sc.cur.events + sc.prev.events
		sc.mu.Unlock()
		return true
	})
	require.EqualValues(t, 20_000, n)
}
