package bench

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for name, gen := range map[string]func() time.Duration{
		"uniform ms":  func() time.Duration { return time.Duration(rng.Int64N(int64(50 * time.Millisecond))) },
		"exponential": func() time.Duration { return time.Duration(rng.ExpFloat64() * float64(3*time.Millisecond)) },
		"tiny":        func() time.Duration { return time.Duration(rng.Int64N(300)) },
		"heavy tail":  func() time.Duration { return time.Duration(math.Exp(rng.Float64()*25)) + time.Microsecond },
	} {
		t.Run(name, func(t *testing.T) {
			var h histogram
			samples := make([]time.Duration, 100_000)
			for i := range samples {
				samples[i] = gen()
				h.record(samples[i])
			}
			slices.Sort(samples)
			for _, q := range []float64{0, 0.5, 0.9, 0.95, 0.99, 0.999, 1} {
				rank := max(int(math.Ceil(q*float64(len(samples)))), 1)
				exact := samples[rank-1]
				got := h.quantile(q)
				assert.GreaterOrEqual(t, got, exact, "q=%v", q)
				assert.LessOrEqual(t, float64(got-exact), float64(exact)/128+1, "q=%v: %v vs exact %v", q, got, exact)
			}
			assert.Equal(t, samples[len(samples)-1], h.maxValue())
			assert.Equal(t, uint64(len(samples)), h.count())
		})
	}
}

func TestHistogramBuckets(t *testing.T) {
	// Every value falls in the bucket whose range holds it, and the buckets
	// tile the number line in order.
	prevEnd := uint64(0)
	for i := range histBuckets {
		lo, w := bucketRange(i)
		require.Equal(t, prevEnd, lo, "bucket %d", i)
		require.Equal(t, i, bucketOf(lo))
		require.Equal(t, i, bucketOf(lo+w-1))
		prevEnd = lo + w
		if prevEnd == 0 { // wrapped: the last bucket ends at 2^64
			require.Equal(t, histBuckets-1, i)
		}
	}
	assert.Equal(t, histBuckets-1, bucketOf(math.MaxUint64))
}

func TestHistogramConcurrentAndMerge(t *testing.T) {
	var a, b histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				a.record(time.Duration(g*1000 + i))
			}
		})
	}
	wg.Wait()
	b.record(time.Hour)
	b.merge(&a)
	assert.Equal(t, uint64(8001), b.count())
	assert.Equal(t, time.Hour, b.maxValue())
	assert.Equal(t, time.Hour, b.quantile(1))
	var empty histogram
	assert.Zero(t, empty.quantile(0.99))
	assert.Zero(t, empty.mean())
}

func TestEncodeIsValidJSON(t *testing.T) {
	devs := newDevices(3)
	var body []byte
	for i := range 9 {
		body, _ = devs[i%3].appendNDJSON(body, 1764190000000+int64(i))
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	require.Len(t, lines, 9)
	for i, l := range lines {
		var e struct {
			DeviceID string  `json:"device_id"`
			Stream   string  `json:"stream"`
			TS       int64   `json:"ts"`
			Value    float64 `json:"value"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &e), l)
		assert.Equal(t, devs[i%3].id, e.DeviceID)
		assert.Equal(t, "temperature", e.Stream)
		assert.Equal(t, 1764190000000+int64(i), e.TS)
		assert.Equal(t, reading(i%3, uint64(i/3)), e.Value)
		assert.True(t, e.Value >= 15 && e.Value < 30, e.Value)
	}
	assert.Equal(t, "dev-000001", devs[0].id)

	p, v := devs[0].appendPayload(nil, 42)
	var e map[string]float64
	require.NoError(t, json.Unmarshal(p, &e))
	assert.Equal(t, map[string]float64{"ts": 42, "value": v}, e)
}

func TestScheduleClaim(t *testing.T) {
	s := newSchedule(time.Unix(100, 0), 0, 25)
	var got []int
	for {
		_, n := s.claim(10)
		if n == 0 {
			break
		}
		got = append(got, n)
	}
	assert.Equal(t, []int{10, 10, 5}, got)
	assert.Equal(t, int64(25), s.claimed())
	assert.True(t, s.due(7).IsZero(), "flat out: nothing is due later")

	r := newSchedule(time.Unix(100, 0), 4, 0)
	assert.True(t, r.fixedRate())
	assert.Equal(t, time.Unix(102, 500_000_000), r.due(10))
}

func TestParseReady(t *testing.T) {
	for _, tc := range []struct {
		line, http, mqtt string
		ok               bool
	}{
		{`time=2025-01-01T00:00:00.000Z level=INFO msg="node ready" node_id=box http_addr=127.0.0.1:41234 mqtt_addr=127.0.0.1:41235 data_dir="/tmp/a b" next_offset=0 version=dev took=3ms`,
			"127.0.0.1:41234", "127.0.0.1:41235", true},
		{`time=2025-01-01T00:00:00.000Z level=INFO msg="node ready" http_addr=127.0.0.1:1 mqtt_addr=""`, "127.0.0.1:1", "", true},
		{`{"time":"2025-01-01T00:00:00Z","level":"INFO","msg":"node ready","http_addr":"127.0.0.1:2","mqtt_addr":"127.0.0.1:3"}`, "127.0.0.1:2", "127.0.0.1:3", true},
		{`time=2025-01-01T00:00:00.000Z level=INFO msg="opening buffer" http_addr=127.0.0.1:1`, "", "", false},
		{`msg="node ready`, "", "", false},
		{`{"msg":"other"}`, "", "", false},
		{``, "", "", false},
	} {
		h, m, ok := parseReady(tc.line)
		assert.Equal(t, tc.ok, ok, tc.line)
		assert.Equal(t, tc.http, h, tc.line)
		assert.Equal(t, tc.mqtt, m, tc.line)
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics([]byte(`# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2.3658496e+07
holdfast_events_accepted_total{transport="http"} 1500
holdfast_events_accepted_total{transport="mqtt"} 7
holdfast_events_rejected_total{reason="malformed",transport="mqtt"} 2
holdfast_events_rejected_total{reason="too_large",transport="mqtt"} 3
go_goroutines 12
`))
	require.NoError(t, err)
	assert.Equal(t, 2.3658496e+07, m.rss)
	assert.Equal(t, map[string]float64{"http": 1500, "mqtt": 7}, m.accepted)
	assert.Equal(t, map[string]float64{"mqtt": 5}, m.rejected)

	_, err = parseMetrics([]byte("go_goroutines 3\n"))
	assert.Error(t, err)
}

func TestReportText(t *testing.T) {
	rep := &Report{
		Transport: TransportHTTP, Target: "127.0.0.1:8080", NodeStarted: true, NodePID: 42,
		Devices: 1000, Connections: 8, Batch: 1000, Rate: 0, DurationLimit: 15, Seconds: 15.01,
		Sent: 7_500_000, Acked: 7_499_000, Throughput: 499_600,
		Errors:        map[string]int64{"http_503": 1000},
		ErrorExamples: map[string]string{"http_503": "events not stored"},
		NodeAccepted:  7_499_000,
		Latency:       Latency{Per: "batch", From: "send_time", Samples: 7500, P50: 12.3, P95: 20, P99: 25.5, Max: 101, Mean: 13},
		RSS:           RSS{IdleBytes: 15 << 20, PeakBytes: 120 << 20, FinalBytes: 110 << 20, Samples: 60, HWMBytes: 121 << 20},
		PerSecond:     []int64{400_000, 500_000, 510_000, 490_000, 0, 500_000, 250_000},
	}
	var b strings.Builder
	require.NoError(t, rep.WriteText(&b))
	out := b.String()
	for _, want := range []string{
		"7,500,000 sent, 7,499,000 acked",
		"http_503", "1,000",
		"499,600 events/s",
		"per batch of 1000 events",
		"p50 12.30ms  p95 20.00ms  p99 25.50ms  max 101ms",
		"idle 15.0 MiB, peak 120.0 MiB",
		"510K |",
	} {
		assert.Contains(t, out, want)
	}
	for _, l := range strings.Split(out, "\n") {
		assert.Equal(t, strings.TrimRight(l, " "), l, "no trailing spaces")
	}
	assert.Equal(t, int64(1000), rep.ErrorCount())
}

func TestChart(t *testing.T) {
	assert.Contains(t, chart([]int64{5}, 0.5), "too short")
	long := make([]int64, 600)
	for i := range long {
		long[i] = int64(i)
	}
	c := chart(long, 600)
	assert.Contains(t, c, "one column per 10 seconds")
	rows := strings.Split(strings.TrimSuffix(c, "\n"), "\n")
	require.Len(t, rows, 1+chartRows+2)
	for _, r := range rows {
		assert.LessOrEqual(t, len(r), 12+chartCols)
	}
	assert.Contains(t, chart([]int64{0, 0, 0}, 3), "nothing was acknowledged")
}

func TestGroup(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1500: "-1,500"} {
		assert.Equal(t, want, group(in))
	}
	assert.Equal(t, "1.5M", si(1.5e6))
	assert.Equal(t, "12.3K", si(12_345))
	assert.Equal(t, "950", si(950))
}
