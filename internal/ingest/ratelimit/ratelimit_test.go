package ratelimit

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clock is a manual clock for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time             { return c.t }
func (c *clock) add(d time.Duration)        { c.t = c.t.Add(d) }
func newClock() *clock                      { return &clock{t: time.Unix(1_700_000_000, 0)} }
func limited(l *Limiter, tr string) float64 { return testutil.ToFloat64(l.limited.WithLabelValues(tr)) }

func TestOffIsNil(t *testing.T) {
	var l *Limiter = New(Options{})
	if l != nil {
		t.Fatal("rate 0 must give no limiter")
	}
	if ok, _ := l.Allow("http", "d", "s"); !ok {
		t.Fatal("a nil limiter must allow")
	}
	if d := l.Hold("mqtt", "d", "s", time.Second); d != 0 {
		t.Fatalf("a nil limiter must not hold: %v", d)
	}
	if l.Bursts() != nil || l.Devices() != 0 {
		t.Fatal("a nil limiter has no state")
	}
}

func TestDefaultBurst(t *testing.T) {
	for _, c := range []struct {
		rate float64
		want int
	}{{0.5, 1}, {1, 1}, {10, 10}, {2.5, 3}} {
		if _, b := New(Options{Rate: c.rate}).Rate(); b != c.want {
			t.Errorf("rate %v: burst %d, want %d", c.rate, b, c.want)
		}
	}
}

// TestAllowPerDevice: each device has its own bucket; over it, Allow refuses
// with the time until the next token, counts it and lists the device as a
// burst for a minute; a device at its rate is never refused.
func TestAllowPerDevice(t *testing.T) {
	c := newClock()
	reg := prometheus.NewRegistry()
	l := New(Options{Rate: 10, Burst: 5, now: c.now, Registerer: reg})
	for i := range 5 {
		if ok, _ := l.Allow("http", "flood", "temp"); !ok {
			t.Fatalf("event %d within the burst refused", i)
		}
	}
	ok, retry := l.Allow("http", "flood", "temp")
	if ok || retry != 100*time.Millisecond {
		t.Fatalf("6th event: ok %v retry %v, want refused with 100ms", ok, retry)
	}
	c.add(50 * time.Millisecond)
	if ok, retry := l.Allow("http", "flood", "temp"); ok || retry != 50*time.Millisecond {
		t.Fatalf("half a token later: ok %v retry %v, want refused with 50ms", ok, retry)
	}
	// Another device is unaffected, and one at its rate is never refused.
	for i := range 100 {
		if ok, _ := l.Allow("http", "calm", "temp"); !ok {
			t.Fatalf("calm device refused at event %d", i)
		}
		c.add(100 * time.Millisecond)
	}
	if got := limited(l, "http"); got != 2 {
		t.Fatalf("limited events %v, want 2", got)
	}
	bs := l.Bursts()
	if len(bs) != 0 {
		// 10 s passed: the flood was limited then, within the minute.
		if bs[0].Device != "flood" || bs[0].Stream != "temp" || len(bs) != 1 {
			t.Fatalf("bursts %+v, want only flood on temp", bs)
		}
	} else {
		t.Fatal("flood not listed as a burst")
	}
	if bs[0].Over < 0.28 || bs[0].Over > 0.29 { // 2 of 7
		t.Fatalf("over share %v, want 2/7", bs[0].Over)
	}
	c.add(BurstWindow)
	if bs := l.Bursts(); len(bs) != 0 {
		t.Fatalf("bursts a minute later: %+v", bs)
	}
}

// TestHold: an MQTT 3.1.1 device is held, not refused: each event over the
// burst waits its turn, so the device's rate converges to the limit; a wait
// beyond maxWait is cut to maxWait without borrowing.
func TestHold(t *testing.T) {
	c := newClock()
	l := New(Options{Rate: 4, Burst: 1, now: c.now})
	if d := l.Hold("mqtt", "d", "s", time.Second); d != 0 {
		t.Fatalf("first event held %v", d)
	}
	// Sending as fast as the holds let it: one every 250 ms.
	var total time.Duration
	for i := range 20 {
		d := l.Hold("mqtt", "d", "s", time.Second)
		if d != 250*time.Millisecond {
			t.Fatalf("event %d held %v, want 250ms", i, d)
		}
		c.add(d)
		total += d
	}
	if got := limited(l, "mqtt"); got != 20 {
		t.Fatalf("limited %v, want 20", got)
	}
	// Several connections of one device at once: the waits grow to maxWait
	// and stop there.
	var last time.Duration
	for range 10 {
		last = l.Hold("mqtt", "d", "s", 500*time.Millisecond)
	}
	if last != 500*time.Millisecond {
		t.Fatalf("wait %v, want capped at 500ms", last)
	}
}

// TestBounded: idle devices are swept, and the map never exceeds MaxDevices.
func TestBounded(t *testing.T) {
	c := newClock()
	l := New(Options{Rate: 1, MaxDevices: 64, Idle: time.Minute, now: c.now})
	for i := range 10_000 {
		l.Allow("http", fmt.Sprintf("dev-%d", i), "s")
	}
	if n := l.Devices(); n > 64 {
		t.Fatalf("%d devices remembered, bound 64", n)
	}
	c.add(time.Minute)
	l.Allow("http", "late", "s")
	for i := range shards { // a sweep per shard, each on its next new device
		for j := 0; ; j++ {
			d := fmt.Sprintf("x-%d-%d", i, j)
			if l.shard(d) == &l.shards[i] {
				l.Allow("http", d, "s")
				break
			}
		}
	}
	if n := l.Devices(); n > shards+1 {
		t.Fatalf("%d devices remembered after a minute idle, want only the %d new", n, shards+1)
	}
}

func TestIdleNotBelowRefill(t *testing.T) {
	l := New(Options{Rate: 0.01, Burst: 10, Idle: time.Second})
	if l.idle < 1000*time.Second {
		t.Fatalf("idle %v: a bucket still refilling would be forgotten", l.idle)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := New(Options{Rate: 1e9, Burst: 1 << 30})
	devs := make([]string, 1000)
	for i := range devs {
		devs[i] = fmt.Sprintf("device-%d", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow("http", devs[i%len(devs)], "s")
			i++
		}
	})
}

func BenchmarkAllowAt(b *testing.B) {
	l := New(Options{Rate: 1e9, Burst: 1 << 30})
	devs := make([]string, 1000)
	for i := range devs {
		devs[i] = fmt.Sprintf("device-%d", i)
	}
	now := time.Now()
	i := 0
	for b.Loop() {
		l.AllowAt(now, "http", devs[i%len(devs)], "s")
		i++
	}
}

// TestAllowUpTo: a run of one device's events takes the tokens there are,
// the first events of the run, and counts the rest as limited.
func TestAllowUpTo(t *testing.T) {
	c := newClock()
	l := New(Options{Rate: 10, Burst: 5, now: c.now})
	n, retry := l.AllowUpTo(c.now(), "http", "d", "s", 8)
	if n != 5 || retry != 100*time.Millisecond {
		t.Fatalf("allowed %d retry %v, want 5 and 100ms", n, retry)
	}
	if n, _ := l.AllowUpTo(c.now(), "http", "d", "s", 3); n != 0 {
		t.Fatalf("allowed %d with no tokens", n)
	}
	c.add(250 * time.Millisecond)
	if n, _ := l.AllowUpTo(c.now(), "http", "d", "s", 3); n != 2 {
		t.Fatalf("allowed %d after 2.5 tokens, want 2", n)
	}
	if got := limited(l, "http"); got != 7 {
		t.Fatalf("limited %v, want 7", got)
	}
	if bs := l.Bursts(); len(bs) != 1 || bs[0].Over != 7.0/14 {
		t.Fatalf("bursts %+v, want one with 7 of 14 over", bs)
	}
}
