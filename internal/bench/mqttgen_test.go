package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// allRecorder collects the acknowledged events of every device.
type allRecorder struct {
	mu     sync.Mutex
	points map[string][]point
}

func (r *allRecorder) onAck(deviceID string, ts int64, value float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.points == nil {
		r.points = map[string][]point{}
	}
	r.points[deviceID] = append(r.points[deviceID], point{ts, value})
}

// TestMQTTEveryMessageStoredOnce runs the generator flat out (with acks
// batched from batchMinInflight in flight) and at a fixed rate (the epoll
// pollers keeping the schedule, on Linux) against the embedded broker, and
// checks that each message was acknowledged once and is stored once: the node
// holds, device by device, exactly the events the generator saw acknowledged.
// At a fixed rate with one message in flight a device's window is often full
// when its next message is due, which it then sends on its ack; run by
// duration, no message due after the deadline is sent.
func TestMQTTEveryMessageStoredOnce(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		devices, inflight, batched int
		count                      int64
		rate                       float64
		duration                   time.Duration // with no count
	}{
		{name: "flat out", devices: 25, inflight: 10, count: 3000},
		{name: "flat out, acks batched", devices: 50, inflight: 100, batched: 50, count: 12000},
		{name: "fixed rate", devices: 25, inflight: 10, count: 3000, rate: 4000},
		{name: "fixed rate, one in flight", devices: 5, inflight: 1, count: 2000, rate: 5000},
		{name: "fixed rate, by duration", devices: 25, inflight: 10, rate: 2000, duration: 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t)
			rec := &allRecorder{}
			duration := time.Minute
			if tc.duration > 0 {
				duration = tc.duration
			}
			rep, err := Run(t.Context(), Options{
				Transport: TransportMQTT, Target: n.MQTTAddr(), HTTPTarget: n.HTTPAddr(),
				Devices: tc.devices, Count: tc.count, Inflight: tc.inflight, Rate: tc.rate, Duration: duration,
				onAck: rec.onAck,
			})
			require.NoError(t, err)
			assert.Equal(t, tc.batched, rep.AckBatch)
			if tc.count == 0 { // by duration: what was sent, at most what fell due
				tc.count = rep.Sent
				require.Positive(t, tc.count)
				require.LessOrEqual(t, float64(tc.count), tc.rate*tc.duration.Seconds(), "sent beyond the schedule")
			}
			assert.Equal(t, tc.count, rep.Sent)
			assert.Equal(t, tc.count, rep.Acked)
			assert.Zero(t, rep.ErrorCount(), "errors: %v %v", rep.Errors, rep.ErrorExamples)
			assert.Equal(t, tc.count, rep.NodeAccepted)
			assert.Equal(t, uint64(tc.count), rep.Latency.Samples)
			assert.Positive(t, rep.CPU.BenchUSPerEvent, "generator CPU per event")

			var stored int64
			for i := range tc.devices {
				id := fmt.Sprintf("dev-%06d", i+1)
				got := storedPoints(t, n.HTTPAddr(), id)
				want := rec.points[id]
				sortPoints(got)
				sortPoints(want)
				require.Equal(t, want, got, "device %s", id)
				stored += int64(len(got))
			}
			assert.Equal(t, tc.count, stored)
		})
	}
}

// TestCompareBroker runs the same load against a second holdfast node as
// the broker to compare with: both runs are reported, the compared one
// with the generator's figures only, and the ratio of their throughputs.
func TestCompareBroker(t *testing.T) {
	a, b := newTestNode(t), newTestNode(t)
	rep, err := Run(t.Context(), Options{
		Transport: TransportMQTT, Target: a.MQTTAddr(), HTTPTarget: a.HTTPAddr(),
		CompareBroker: b.MQTTAddr(), Devices: 10, Count: 1000, Inflight: 4,
	})
	require.NoError(t, err)
	require.NotNil(t, rep.Compare)
	c := rep.Compare
	assert.Equal(t, int64(1000), rep.Acked)
	assert.Equal(t, int64(1000), rep.NodeAccepted)
	assert.Equal(t, b.MQTTAddr(), c.Target)
	assert.True(t, c.Compared)
	assert.Equal(t, int64(1000), c.Acked)
	assert.Zero(t, c.ErrorCount(), "errors: %v %v", c.Errors, c.ErrorExamples)
	assert.Equal(t, int64(-1), c.NodeAccepted, "the compared broker's /metrics are not read")
	assert.Positive(t, c.CPU.BenchUSPerEvent)
	assert.InDelta(t, rep.Throughput/c.Throughput, rep.CompareRatio, 0.01)

	var out strings.Builder
	require.NoError(t, rep.WriteText(&out))
	assert.Contains(t, out.String(), "generator")
	assert.Contains(t, out.String(), "the broker compared with")
	assert.Contains(t, out.String(), fmt.Sprintf("throughput %s / %s = ", a.MQTTAddr(), b.MQTTAddr()))

	_, err = Run(t.Context(), Options{Transport: TransportHTTP, Target: a.HTTPAddr(), CompareBroker: b.MQTTAddr(), Count: 10})
	assert.ErrorContains(t, err, "--compare-broker")
}

// TestMosquitto loads a Mosquitto, a broker that is not holdfast: the run
// reports what the generator measured and reads no /metrics.
func TestMosquitto(t *testing.T) {
	addr := testutil.StartMosquitto(t) // skips without mosquitto, unless HOLDFAST_REQUIRE_MOSQUITTO is set

	rep, err := Run(t.Context(), Options{
		Transport: TransportMQTT, Target: addr, HTTPTarget: NoMetrics,
		Devices: 20, Count: 4000, Inflight: 10,
	})
	require.NoError(t, err)
	assert.Equal(t, int64(4000), rep.Acked)
	assert.Zero(t, rep.ErrorCount(), "errors: %v %v", rep.Errors, rep.ErrorExamples)
	assert.Equal(t, int64(-1), rep.NodeAccepted)
	assert.Positive(t, rep.CPU.BenchUSPerEvent)
	var out strings.Builder
	require.NoError(t, rep.WriteText(&out))
	assert.Contains(t, out.String(), "generator's own figures only")
}

// TestMQTTInterruptDrains stops a flat-out MQTT run midway: what was sent is
// still acknowledged, and nothing counts as an error.
func TestMQTTInterruptDrains(t *testing.T) {
	n := newTestNode(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(500*time.Millisecond, cancel)
	rep, err := Run(ctx, Options{
		Transport: TransportMQTT, Target: n.MQTTAddr(), HTTPTarget: n.HTTPAddr(),
		Devices: 20, Inflight: 10, Duration: time.Minute,
	})
	require.ErrorContains(t, err, "interrupted")
	require.NotNil(t, rep)
	assert.Positive(t, rep.Acked)
	assert.Equal(t, rep.Sent, rep.Acked)
	assert.Zero(t, rep.ErrorCount(), "errors: %v %v", rep.Errors, rep.ErrorExamples)
}
