package uplink

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// twoPaths starts a cloud and a proxy in front of it: the proxy is the
// preferred link, the server's own listener the second; both reach the same
// streams.
func twoPaths(t *testing.T) (srv *cloud.Server, proxy *toxiproxy.Proxy) {
	t.Helper()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	proxy = toxiproxy.NewProxy(api, "preferred", "127.0.0.1:0", strings.TrimPrefix(srv.URL(), "nats://"))
	require.NoError(t, proxy.Start())
	t.Cleanup(proxy.Stop)
	return srv, proxy
}

// linkSyncer syncs l over the proxy (preferred) and then the server's own
// listener, the second metered or not; "door" is critical.
func linkSyncer(t *testing.T, srv *cloud.Server, proxy *toxiproxy.Proxy, l *buffer.Log, metered bool) (*Syncer, *JetStreamSink) {
	t.Helper()
	sink := NewJetStreamSink(JetStreamOptions{NodeID: "n1", PreferredProbe: 100 * time.Millisecond, Links: []Link{
		{URL: "nats://" + proxy.Listen}, {URL: srv.URL(), Metered: metered},
	}})
	rules, err := FixedLanes(map[string]string{"door": "critical"})
	require.NoError(t, err)
	s := NewSyncer(l, sink, SyncOptions{
		BatchRecords: 50, MaxDelay: 5 * time.Millisecond, Lanes: rules, ProbeInterval: 50 * time.Millisecond,
		Retry: RetryOptions{InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond},
	})
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s, sink
}

func appendEvent(t *testing.T, l *buffer.Log, i int, stream string) uint64 {
	t.Helper()
	e := event.Event{DeviceID: fmt.Sprint("d", i%5), Stream: stream, TS: int64(1_700_000_000_000 + i), Value: float64(i)}
	off, err := l.Append(e.AppendBinary(nil))
	require.NoError(t, err)
	return off
}

// cloudCount counts how often the cloud holds each of node n1's records.
func cloudCount(t *testing.T, srv *cloud.Server) map[uint64]int {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	count := map[uint64]int{}
	for _, stream := range []string{cloud.StreamEvents, cloud.StreamResults} {
		stored, err := cloud.StoredOffsets(context.Background(), js, "n1", stream, 0)
		require.NoError(t, err)
		for _, s := range stored {
			count[s.Offset]++
		}
	}
	return count
}

func requireEachOnce(t *testing.T, count map[uint64]int, end uint64) {
	t.Helper()
	for off := range end {
		require.Equal(t, 1, count[off], "record %d stored %d times", off, count[off])
	}
	require.Len(t, count, int(end))
}

// TestLinksFailOverAndBack: records flow over the preferred path, over the
// second while the preferred is cut, and over the preferred again once it is
// back, while a writer appends throughout: every record is in the cloud once.
func TestLinksFailOverAndBack(t *testing.T) {
	srv, proxy := twoPaths(t)
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	s, sink := linkSyncer(t, srv, proxy, l, false)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			stream := "temp"
			if i%7 == 0 {
				stream = "door"
			}
			appendEvent(t, l, i, stream)
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	synced := func(at uint64) func() bool { return func() bool { return s.Status().SyncedOffset >= at } }
	eventually(t, "records over the preferred link", synced(200))
	require.Equal(t, 0, sink.LinkInUse())

	proxy.Stop()
	cut := l.DurableOffset()
	eventually(t, "failover to the second link", func() bool { return sink.LinkInUse() == 1 })
	eventually(t, "records over the second link", synced(cut+200))
	st := s.Status()
	require.NotNil(t, st.Link)
	require.Equal(t, LinkStatus{URL: srv.URL(), Metered: false}, *st.Link)

	require.NoError(t, proxy.Start())
	eventually(t, "back on the preferred link", func() bool { return sink.LinkInUse() == 0 })
	back := l.DurableOffset()
	eventually(t, "records over the preferred link again", synced(back+200))

	close(stop)
	wg.Wait()
	waitSynced(t, s, l)
	requireEachOnce(t, cloudCount(t, srv), l.DurableOffset())
}

// TestMeteredLinkCarriesOnlyCriticalAndWindows: while the preferred path is
// cut, the metered second link carries the critical lane and window results;
// normal events and watermarks wait in the log, the normal lane's lag shows
// them, and they follow once the preferred link is back, each record once.
func TestMeteredLinkCarriesOnlyCriticalAndWindows(t *testing.T) {
	srv, proxy := twoPaths(t)
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	s, sink := linkSyncer(t, srv, proxy, l, true)

	for i := range 20 {
		appendEvent(t, l, i, "temp")
	}
	waitSynced(t, s, l)
	require.Equal(t, 0, sink.LinkInUse())

	proxy.Stop()
	// Metered from now on: what it may carry and what it may not, mixed.
	carried, held := map[uint64]bool{}, map[uint64]bool{}
	for i := range 300 {
		switch i % 6 {
		case 0:
			carried[appendEvent(t, l, i, "door")] = true
		case 1:
			w := event.WindowRecord{Stream: "temp", DeviceID: "d1", SizeMS: 1000, Start: int64(1_700_000_000_000 + i*1000), Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1}
			off, err := l.Append(w.AppendBinary(nil))
			require.NoError(t, err)
			carried[off] = true
		case 2:
			wm := event.WatermarkRecord{Stream: "temp", Watermark: int64(1_700_000_000_000 + i)}
			off, err := l.Append(wm.AppendBinary(nil))
			require.NoError(t, err)
			held[off] = true
		default:
			held[appendEvent(t, l, i, "temp")] = true
		}
	}
	a := event.AlertRecord{Rule: "r", Severity: "warning", Firing: true, Stream: "temp", FiredAt: 1_700_000_000_000}
	off, err := l.Append(a.AppendBinary(nil))
	require.NoError(t, err)
	carried[off] = true

	eventually(t, "critical records and window results over the metered link", func() bool {
		c := cloudCount(t, srv)
		for off := range carried {
			if c[off] == 0 {
				return false
			}
		}
		return true
	})
	require.Equal(t, 1, sink.LinkInUse())
	c := cloudCount(t, srv)
	for off := range held {
		require.Zero(t, c[off], "record %d went over the metered link", off)
	}
	st := s.Status()
	require.Equal(t, LinkStatus{URL: srv.URL(), Metered: true}, *st.Link)
	for _, ls := range st.Lanes {
		switch ls.Lane {
		case "normal":
			require.GreaterOrEqual(t, ls.LagRecords, uint64(len(held)), "normal lane lag: %+v", st)
		case "critical":
			require.Zero(t, ls.LagRecords)
		}
	}
	// Retention may not take the held records: the cursor stays before them.
	require.Less(t, st.SyncedOffset, l.DurableOffset())

	require.NoError(t, proxy.Start())
	waitSynced(t, s, l)
	require.Equal(t, 0, sink.LinkInUse())
	requireEachOnce(t, cloudCount(t, srv), l.DurableOffset())
}

// TestMeteredHeldRecordsSurviveRestart: a node restarted while records sent
// ahead over a metered link are not yet passed by their lane's cursor finds
// them in the cloud by looking and does not send them again.
func TestMeteredHeldRecordsSurviveRestart(t *testing.T) {
	srv, proxy := twoPaths(t)
	dir := t.TempDir()
	l, err := buffer.Open(buffer.Options{Dir: dir})
	require.NoError(t, err)
	s, _ := linkSyncer(t, srv, proxy, l, true)
	proxy.Stop()
	var windows []uint64
	for i := range 60 {
		appendEvent(t, l, i, "temp")
		w := event.WindowRecord{Stream: "temp", DeviceID: "d1", SizeMS: 1000, Start: int64(1_700_000_000_000 + i*1000), Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1}
		off, err := l.Append(w.AppendBinary(nil))
		require.NoError(t, err)
		windows = append(windows, off)
	}
	eventually(t, "windows over the metered link", func() bool { return cloudCount(t, srv)[windows[len(windows)-1]] == 1 })
	require.NoError(t, s.Close())
	require.NoError(t, l.Close())

	require.NoError(t, proxy.Start())
	l, err = buffer.Open(buffer.Options{Dir: dir})
	require.NoError(t, err)
	defer l.Close()
	s, _ = linkSyncer(t, srv, proxy, l, true)
	waitSynced(t, s, l)
	requireEachOnce(t, cloudCount(t, srv), l.DurableOffset())
}
