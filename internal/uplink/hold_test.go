package uplink

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pace"
)

// aggSyncer syncs l to srv over one (unmetered) link; "door" is critical.
// pacer, if not nil, paces it.
func aggSyncer(t *testing.T, srv *cloud.Server, l *buffer.Log, pacer *pace.Pacer) *Syncer {
	t.Helper()
	rules, err := FixedLanes(map[string]string{"door": "critical"})
	require.NoError(t, err)
	s := NewSyncer(l, NewJetStreamSink(JetStreamOptions{NodeID: "n1", URL: srv.URL()}), SyncOptions{
		BatchRecords: 50, MaxDelay: 5 * time.Millisecond, Lanes: rules, ProbeInterval: time.Second,
		Retry: RetryOptions{InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond},
		Pacer: pacer,
	})
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s
}

// cloudCountAll counts how often the cloud holds each of node n1's records,
// the loss ledger's included.
func cloudCountAll(t *testing.T, srv *cloud.Server) map[uint64]int {
	t.Helper()
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	count := map[uint64]int{}
	for _, stream := range []string{cloud.StreamEvents, cloud.StreamResults, cloud.StreamLedger} {
		stored, err := cloud.StoredOffsets(context.Background(), js, "n1", stream, 0)
		require.NoError(t, err)
		for _, s := range stored {
			count[s.Offset]++
		}
	}
	return count
}

func appendWindow(t *testing.T, l *buffer.Log, i int) uint64 {
	t.Helper()
	w := event.WindowRecord{Stream: "temp", DeviceID: "d1", SizeMS: 1000, Start: int64(1_700_000_000_000 + i*1000), Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1}
	off, err := l.Append(w.AppendBinary(nil))
	require.NoError(t, err)
	return off
}

// TestAggregatesOnlyCarriesAggregatesThenEverythingOnce: with the syncer
// set to aggregates only (the degradation level limited), the cloud gets
// the critical lane (door events, loss-ledger records), window results and
// alerts, and nothing else: normal events and watermarks wait, the normal
// lane's lag counts exactly the lane's records from its cursor on, and its
// cursor holds retention back. Once it is off, every record is in the cloud
// exactly once.
func TestAggregatesOnlyCarriesAggregatesThenEverythingOnce(t *testing.T) {
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer srv.Close()
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	s := aggSyncer(t, srv, l, nil)

	for i := range 20 {
		appendEvent(t, l, i, "temp")
	}
	waitSynced(t, s, l)

	s.SetAggregatesOnly(true)
	require.True(t, s.AggregatesOnly())
	carried, held := map[uint64]bool{}, map[uint64]bool{}
	normal := 0 // records of the normal lane from the first held one on
	for i := range 300 {
		switch i % 6 {
		case 0:
			carried[appendEvent(t, l, i, "door")] = true
		case 1:
			carried[appendWindow(t, l, i)] = true
			if len(held) > 0 {
				normal++
			}
		case 2:
			wm := event.WatermarkRecord{Stream: "temp", Watermark: int64(1_700_000_000_000 + i)}
			off, err := l.Append(wm.AppendBinary(nil))
			require.NoError(t, err)
			held[off] = true
			normal++
		case 3:
			lr := event.LedgerRecord{Reason: event.LossSampled, Stream: "temp", From: 1_700_000_000_000, To: 1_700_000_000_000 + int64(i), Count: 2}
			off, err := l.Append(lr.AppendBinary(nil))
			require.NoError(t, err)
			carried[off] = true
		default:
			held[appendEvent(t, l, i, "temp")] = true
			normal++
		}
	}
	a := event.AlertRecord{Rule: "r", Severity: "warning", Firing: true, Stream: "temp", FiredAt: 1_700_000_000_000}
	off, err := l.Append(a.AppendBinary(nil))
	require.NoError(t, err)
	carried[off] = true // the high lane: alerts go at least there

	eventually(t, "critical records, loss ledger, window results and alerts synced while aggregates only", func() bool {
		c := cloudCountAll(t, srv)
		for off := range carried {
			if c[off] == 0 {
				return false
			}
		}
		return true
	})
	c := cloudCountAll(t, srv)
	for off := range carried {
		require.Equal(t, 1, c[off], "record %d", off)
	}
	for off := range held {
		require.Zero(t, c[off], "record %d went to the cloud while aggregates only", off)
	}
	require.Len(t, c, 20+len(carried), "the cloud holds the first 20 events and the carried records, nothing else")
	st := s.Status()
	for _, ls := range st.Lanes {
		switch ls.Lane {
		case "normal":
			require.Equal(t, uint64(normal), ls.LagRecords, "normal lane lag: %+v", st)
			require.False(t, ls.LagAtLeast)
		case "critical":
			require.Zero(t, ls.LagRecords)
		}
	}
	require.Less(t, st.SyncedOffset, l.DurableOffset(), "the cursor stays before the held records")
	// More held records: the lag goes on counting them, from where it stopped.
	for i := range 10 {
		held[appendEvent(t, l, 1000+i, "temp")] = true
		normal++
	}
	require.NoError(t, l.WaitDurable(context.Background(), l.DurableOffset()))
	for _, ls := range s.Status().Lanes {
		if ls.Lane == "normal" {
			require.Equal(t, uint64(normal), ls.LagRecords)
		}
	}

	s.SetAggregatesOnly(false)
	waitSynced(t, s, l)
	c = cloudCountAll(t, srv)
	for off := range l.DurableOffset() {
		require.Equal(t, 1, c[off], "record %d stored %d times", off, c[off])
	}
	require.Len(t, c, int(l.DurableOffset()))
}

// TestHoldingCostsNoRescans: while the syncer holds records back it neither
// reads them again nor polls at MaxDelay (5 ms here): over 2 s with nothing
// new it makes at most a few passes and reads no held record again, and
// with held records arriving throughout it reads each once and saves its
// cursors about once a second, not once per record. (The CPU follows these
// counts; the test counts instead of timing.)
func TestHoldingCostsNoRescans(t *testing.T) {
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer srv.Close()
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	s := aggSyncer(t, srv, l, nil)
	s.SetAggregatesOnly(true)
	for i := range 500 {
		appendEvent(t, l, i, "temp")
	}
	w := appendWindow(t, l, 0)
	eventually(t, "the window result synced", func() bool { return cloudCountAll(t, srv)[w] == 1 })
	eventually(t, "every held record read", func() bool { return s.stats.heldReads.Load() == 500 })

	// Nothing new for 2 s.
	passes, reads := s.stats.passes.Load(), s.stats.heldReads.Load()
	time.Sleep(2 * time.Second)
	p := s.stats.passes.Load() - passes
	t.Logf("idle while holding: %d passes in 2 s (MaxDelay 5 ms would make 400)", p)
	require.LessOrEqual(t, p, uint64(4))
	require.Equal(t, reads, s.stats.heldReads.Load(), "no held record read again")
	// Status requests read the records appended since the last one only.
	s.Status()
	lagReads := s.stats.lagReads.Load()
	for range 100 {
		s.Status()
	}
	require.Equal(t, lagReads, s.stats.lagReads.Load(), "the lag of a held lane is not counted again")
	for i := range 10 {
		appendEvent(t, l, 1000+i, "temp")
	}
	require.NoError(t, l.WaitDurable(context.Background(), l.DurableOffset()))
	s.Status()
	// Read by the normal lane's count, and by the other lanes' while their
	// cursors, saved about once a second while records are held, are
	// behind: never the 500 held records again.
	read := s.stats.lagReads.Load() - lagReads
	require.True(t, read >= 10 && read <= 30, "only the new records are read: %d read", read)

	eventually(t, "the 10 held records read", func() bool { return s.stats.heldReads.Load() == 510 })

	// Held records arriving for 2 s, each appended on its own.
	reads, commits := s.stats.heldReads.Load(), s.stats.idleCommits.Load()
	n := 0
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); n++ {
		off := appendEvent(t, l, 2000+n, "temp")
		require.NoError(t, l.WaitDurable(context.Background(), off+1))
		time.Sleep(2 * time.Millisecond)
	}
	eventually(t, "the new held records read", func() bool { return s.stats.heldReads.Load()-reads == uint64(n) })
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, uint64(n), s.stats.heldReads.Load()-reads, "each held record read once")
	ic := s.stats.idleCommits.Load() - commits
	t.Logf("%d held records arrived in 2 s: %d cursor saves", n, ic)
	require.LessOrEqual(t, ic, uint64(4))

	s.SetAggregatesOnly(false)
	waitSynced(t, s, l)
	c := cloudCountAll(t, srv)
	for off := range l.DurableOffset() {
		require.Equal(t, 1, c[off], "record %d stored %d times", off, c[off])
	}
}

// TestFastPathPacesAllButTheCriticalLane: with the pacer on (the latency
// trigger up), the critical lane is sent without a rest, every other lane
// rests between its batches, and every record still reaches the cloud once.
func TestFastPathPacesAllButTheCriticalLane(t *testing.T) {
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer srv.Close()
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	p := pace.New(0.5, time.Nanosecond) // every paced batch after the first rests
	p.SetOn(true)
	s := aggSyncer(t, srv, l, p)

	for i := range 200 {
		appendEvent(t, l, i, "door")
	}
	waitSynced(t, s, l)
	_, rests := p.Rested()
	require.Zero(t, rests, "the critical lane was paced")

	for i := range 200 {
		appendEvent(t, l, 200+i, "temp")
	}
	waitSynced(t, s, l)
	_, rests = p.Rested()
	require.GreaterOrEqual(t, rests, uint64(200/50-1), "the normal lane was not paced")

	count := cloudCountAll(t, srv)
	require.Len(t, count, 400)
	for off, n := range count {
		require.Equal(t, 1, n, "offset %d", off)
	}
}
