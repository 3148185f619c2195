package uplink_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/aggregator"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// countingSink is a real sink that counts the Sends that reach it.
type countingSink struct {
	uplink.Sink
	sends atomic.Int64
}

func (c *countingSink) Send(ctx context.Context, recs []uplink.Record) error {
	c.sends.Add(1)
	return c.Sink.Send(ctx, recs)
}

// TestFallbackSink: a node syncs to a site aggregator (sink "aggregator")
// with the cloud as its fallback (sink "cloud"). While the aggregator is
// healthy nothing goes direct; while it is down the records go direct; once
// it is back it gets them too, and forwards them: the cloud holds every
// record once.
func TestFallbackSink(t *testing.T) {
	cl, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer cl.Close()
	aggDir, aggAddr := t.TempDir(), testutil.FreeAddr(t)
	startAgg := func() *aggregator.Aggregator {
		var a *aggregator.Aggregator
		testutil.Eventually(t, "the aggregator starts on its port", func() bool {
			var err error
			a, err = aggregator.Start(aggregator.Options{DataDir: aggDir, Listen: aggAddr, HTTPAddr: "127.0.0.1:0", CloudURL: cl.URL()})
			return err == nil
		})
		return a
	}
	agg := startAgg()

	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	next := 0
	appendEvents := func(n int) {
		var ps [][]byte
		for range n {
			e := event.Event{DeviceID: fmt.Sprint("d", next%5), Stream: "temp", TS: int64(1_700_000_000_000 + next), Value: float64(next)}
			ps = append(ps, e.AppendBinary(nil))
			next++
		}
		_, err := l.Append(ps...)
		require.NoError(t, err)
	}
	opts := uplink.SyncOptions{
		BatchRecords: 50, MaxDelay: 10 * time.Millisecond,
		Retry:   uplink.RetryOptions{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Multiplier: 2, MaxTries: 10},
		Breaker: uplink.BreakerOptions{OpenTimeout: 100 * time.Millisecond},
	}
	primary := uplink.NewSyncer(l, uplink.NewJetStreamSink(uplink.JetStreamOptions{URL: "nats://" + aggAddr, NodeID: "n1", Name: "aggregator"}), opts)
	direct := &countingSink{Sink: uplink.NewJetStreamSink(uplink.JetStreamOptions{URL: cl.URL(), NodeID: "n1"})}
	fo := opts
	fo.SendTimeout = time.Hour
	fallback := uplink.NewSyncer(l, uplink.NewFallbackSink(primary, direct, uplink.FallbackOptions{Name: "cloud"}), fo)
	primary.Start()
	fallback.Start()
	defer fallback.Close()
	defer primary.Close()

	synced := func(s *uplink.Syncer) func() bool {
		return func() bool { return s.Status().SyncedOffset >= l.DurableOffset() }
	}
	nc, err := nats.Connect(cl.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	// inCloud reports whether the cloud holds records 0 to n-1 of n1, and
	// fails the test at once if it holds one twice.
	inCloud := func(n int) func() bool {
		return func() bool {
			stored, err := cloud.StoredOffsets(context.Background(), js, "n1", cloud.StreamEvents, 0)
			require.NoError(t, err)
			seen := map[uint64]bool{}
			for _, s := range stored {
				require.False(t, seen[s.Offset], "offset %d stored twice", s.Offset)
				seen[s.Offset] = true
			}
			return len(seen) == n
		}
	}

	// The aggregator healthy: nothing goes direct.
	appendEvents(300)
	testutil.Eventually(t, "the aggregator has everything", synced(primary))
	testutil.Eventually(t, "the fallback passed everything", synced(fallback))
	testutil.Eventually(t, "the cloud has everything, forwarded", inCloud(300))
	require.Zero(t, direct.sends.Load(), "nothing went direct")

	// The aggregator down: records go direct once it is offline.
	require.NoError(t, agg.Close())
	appendEvents(200)
	testutil.Eventually(t, "the aggregator sink offline", primary.Offline)
	testutil.Eventually(t, "the fallback sent the rest direct", synced(fallback))
	testutil.Eventually(t, "the cloud has everything", inCloud(500))
	require.NotZero(t, direct.sends.Load(), "records went direct")
	require.Less(t, primary.Status().SyncedOffset, l.DurableOffset(), "the aggregator lacks what went direct")

	// The aggregator back: it gets what went direct and forwards it, nothing twice.
	agg = startAgg()
	defer agg.Close()
	appendEvents(100)
	testutil.Eventually(t, "the aggregator has everything", synced(primary))
	testutil.Eventually(t, "the fallback passed everything", synced(fallback))
	testutil.Eventually(t, "everything forwarded", func() bool {
		for _, n := range agg.Status().Cloud.Lag {
			if n > 0 {
				return false
			}
		}
		return true
	})
	testutil.Eventually(t, "the cloud has everything once", inCloud(600))
}
