package node

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// Tests of the ledger records retention makes, with each buffer engine.

var engineNames = []string{"log", "sqlite", "pebble"}

func retentionConfig(t *testing.T, engine string) config.Config {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Mode = "off"
	cfg.Windows.Enabled = false
	cfg.Buffer.Engine = engine
	cfg.Buffer.SegmentBytes = 4096
	cfg.Buffer.MaxBytes = 64 << 10
	return cfg
}

// retentionLedger opens cfg's buffer with a loss ledger as its retention
// hook, and one sink (never started) whose lane cursors are cursors: what it
// has confirmed. The ledger's goroutine does not run: nothing reaches the
// buffer unless the test flushes.
func retentionLedger(t *testing.T, cfg config.Config, cursors map[string]uint64) (*lossLedger, buffer.Engine) {
	log := slog.New(slog.DiscardHandler)
	g := newLossLedger(prometheus.NewRegistry(), log, cfg.DataDir)
	buf, err := OpenBuffer(cfg, buffer.Options{SegmentBytes: int64(cfg.Buffer.SegmentBytes), MaxBytes: int64(cfg.Buffer.MaxBytes),
		OnUnreadDeleted: g.onUnreadDeleted})
	require.NoError(t, err)
	require.NoError(t, buf.CommitCursors(cursors))
	lanes, err := uplink.FixedLanes(map[string]string{"door": "critical"})
	require.NoError(t, err)
	s := uplink.NewSyncer(buf, confirmingSink{}, uplink.SyncOptions{Lanes: lanes})
	g.watchSinks(lanes, []*uplink.Syncer{s})
	return g, buf
}

// fillPastRetention appends events, stream(i) for the i-th, until retention
// has deleted records, and returns the first offset then held.
func fillPastRetention(t *testing.T, buf buffer.Engine, stream func(i int) string) uint64 {
	for i := 0; buf.FirstOffset() == 0; i++ {
		require.Less(t, i, 100_000, "retention never ran")
		e := event.Event{DeviceID: "d", Stream: stream(i), TS: 1_700_000_000_000 + int64(i), Value: float64(i),
			Received: time.Now().UnixMilli()}
		_, err := buf.Append(e.AppendBinary(nil))
		require.NoError(t, err)
	}
	return buf.FirstOffset()
}

// retentionListed returns, per offset, how many evicted_unsynced ledger
// records in buf list it, and the streams they name per offset.
func retentionListed(t *testing.T, buf buffer.Engine) (map[uint64]int, map[uint64]string) {
	times, streams := map[uint64]int{}, map[uint64]string{}
	r := buf.NewReader(0)
	defer r.Close()
	for {
		_, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return times, streams
		}
		require.NoError(t, err)
		if event.Type(p) != event.TypeLedger {
			continue
		}
		l, err := event.DecodeLedger(p)
		require.NoError(t, err)
		require.Equal(t, event.LossEvictedUnsynced, l.Reason)
		n := uint64(0)
		for _, rg := range l.Ranges {
			for off := rg.First; off < rg.First+rg.Len; off++ {
				times[off]++
				streams[off] = l.Stream
			}
			n += rg.Len
		}
		require.Equal(t, n, l.Count, "a ledger record counts its ranges")
	}
}

// A node that stops right after retention deleted records no sink had
// confirmed, before anything else is appended, finds their ledger records at
// its next start: every deleted record listed once, none held listed.
func TestRetentionLedgerSurvivesAStop(t *testing.T) {
	for _, engine := range engineNames {
		t.Run(engine, func(t *testing.T) {
			cfg := retentionConfig(t, engine)
			_, buf := retentionLedger(t, cfg, map[string]uint64{"sync:ok:critical": 0, "sync:ok:normal": 0})
			first := fillPastRetention(t, buf, func(int) string { return "temp" })
			// The stop: the ledger's records never reached the buffer.
			require.NoError(t, buf.Close())

			n, err := Start(cfg, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			defer n.Close()
			times, streams := retentionListed(t, n.buf)
			for off := range first {
				require.Equal(t, 1, times[off], "offset %d deleted unsynced: listed once", off)
				require.Equal(t, "temp", streams[off])
			}
			require.Len(t, times, int(first), "only deleted records are listed")
			require.Equal(t, first, n.ledger.status()["evicted_unsynced"]["temp"], "counted in status")
			_, err = os.Stat(filepath.Join(cfg.DataDir, intentFile))
			require.ErrorIs(t, err, os.ErrNotExist, "the intent file is gone once its records are in the buffer")
		})
	}
}

// With the critical lane confirmed and the normal lane not, retention's
// ledger records list the normal lane's records it deleted and none of the
// critical lane's: the cloud has those.
func TestRetentionLedgerListsOnlyUnconfirmed(t *testing.T) {
	for _, engine := range engineNames {
		t.Run(engine, func(t *testing.T) {
			cfg := retentionConfig(t, engine)
			g, buf := retentionLedger(t, cfg, map[string]uint64{"sync:ok:critical": 1 << 40, "sync:ok:normal": 0})
			defer buf.Close()
			stream := func(i int) string { return []string{"door", "temp"}[i%2] }
			first := fillPastRetention(t, buf, stream)
			g.flush(buf)

			times, streams := retentionListed(t, buf)
			for off := range first {
				if stream(int(off)) == "door" {
					require.Zero(t, times[off], "offset %d: a critical record the sink confirmed is not listed", off)
					continue
				}
				require.Equal(t, 1, times[off], "offset %d: a normal record deleted unconfirmed is listed once", off)
				require.Equal(t, "temp", streams[off])
			}
			for off := range times {
				require.Equal(t, "temp", streams[off], "offset %d", off)
			}
		})
	}
}

// The intent file round-trips, and a damaged one is refused.
func TestIntentFileFormat(t *testing.T) {
	in := []intentEntry{
		{after: 7, rec: event.LedgerRecord{Reason: event.LossEvictedUnsynced, Stream: "temp", From: 1, To: 2, Count: 3,
			Ranges: []event.OffsetRange{{First: 0, Len: 2}, {First: 5, Len: 1}}}},
		{after: 9, rec: event.LedgerRecord{Reason: event.LossEvictedUnsynced, Stream: "hum", From: 3, To: 3, Count: 1,
			Ranges: []event.OffsetRange{{First: 8, Len: 1}}}},
	}
	b := encodeIntent(in)
	out, err := decodeIntent(b)
	require.NoError(t, err)
	require.Equal(t, in, out)
	for i := range b {
		bad := append([]byte(nil), b...)
		bad[i] ^= 0x40
		_, err := decodeIntent(bad)
		require.ErrorIs(t, err, errIntentCorrupt, "byte %d flipped", i)
	}
	_, err = decodeIntent(b[:len(b)-1])
	require.ErrorIs(t, err, errIntentCorrupt)
}

func TestWithoutOffsets(t *testing.T) {
	l := event.LedgerRecord{Count: 12, Ranges: []event.OffsetRange{{First: 0, Len: 5}, {First: 10, Len: 5}, {First: 20, Len: 2}}}
	got := withoutOffsets(l, 3, 12)
	require.Equal(t, []event.OffsetRange{{First: 0, Len: 3}, {First: 12, Len: 3}, {First: 20, Len: 2}}, got.Ranges)
	require.Equal(t, uint64(8), got.Count)
	got = withoutOffsets(l, 11, ^uint64(0))
	require.Equal(t, []event.OffsetRange{{First: 0, Len: 5}, {First: 10, Len: 1}}, got.Ranges)
	require.Equal(t, uint64(6), got.Count)
}

// A node that stops after the ledger records reached the buffer but before
// the intent file was rewritten does not append them a second time.
func TestRetentionLedgerNotWrittenTwice(t *testing.T) {
	for _, engine := range engineNames {
		t.Run(engine, func(t *testing.T) {
			cfg := retentionConfig(t, engine)
			g, buf := retentionLedger(t, cfg, map[string]uint64{"sync:ok:critical": 0, "sync:ok:normal": 0})
			first := fillPastRetention(t, buf, func(int) string { return "temp" })
			path := filepath.Join(cfg.DataDir, intentFile)
			intent, err := os.ReadFile(path)
			require.NoError(t, err)
			g.flush(buf)
			require.NoError(t, buf.Close())
			// The stop came before the file was rewritten.
			require.NoError(t, os.WriteFile(path, intent, 0o600))

			n, err := Start(cfg, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			defer n.Close()
			times, _ := retentionListed(t, n.buf)
			for off := range first {
				require.Equal(t, 1, times[off], "offset %d listed once", off)
			}
			_, err = os.Stat(path)
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// An intent entry whose records the buffer still holds (the node stopped
// after the file was written, before the deletion was durable) lists
// nothing: the records are there and will sync.
func TestRetentionLedgerDropsWhatIsStillHeld(t *testing.T) {
	cfg := retentionConfig(t, "log")
	buf, err := OpenBuffer(cfg, buffer.Options{SegmentBytes: 4096, MaxBytes: 64 << 10})
	require.NoError(t, err)
	for i := range 10 {
		_, err := buf.Append(ev(i))
		require.NoError(t, err)
	}
	require.NoError(t, buf.Close())
	path := filepath.Join(cfg.DataDir, intentFile)
	require.NoError(t, os.WriteFile(path, encodeIntent([]intentEntry{{after: 5, rec: event.LedgerRecord{
		Reason: event.LossEvictedUnsynced, Stream: "temp", Count: 3, Ranges: []event.OffsetRange{{First: 2, Len: 3}}}}}), 0o600))

	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer n.Close()
	times, _ := retentionListed(t, n.buf)
	require.Empty(t, times)
	require.Empty(t, n.ledger.status())
	_, err = os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// Pebble applies retention in Open, before anything else runs: what it
// deletes there is accounted for as well as what the intent file left from
// before the stop, each record once.
func TestRetentionLedgerAtOpen(t *testing.T) {
	cfg := retentionConfig(t, "pebble")
	_, buf := retentionLedger(t, cfg, map[string]uint64{"sync:ok:critical": 0, "sync:ok:normal": 0})
	fillPastRetention(t, buf, func(int) string { return "temp" })
	for i := range 400 { // more than the smaller limit below keeps
		_, err := buf.Append(ev(i))
		require.NoError(t, err)
	}
	before := buf.FirstOffset()
	require.NoError(t, buf.Close())

	cfg.Buffer.MaxBytes = 32 << 10 // retention runs in Open
	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer n.Close()
	first := n.buf.FirstOffset()
	require.Greater(t, first, before, "retention ran in Open")
	var times map[uint64]int
	deadline := time.Now().Add(10 * time.Second)
	for {
		times, _ = retentionListed(t, n.buf)
		if len(times) >= int(first) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for off := range first {
		require.Equal(t, 1, times[off], "offset %d listed once", off)
	}
	require.Len(t, times, int(first))
}

// An intent entry that lists records the buffer still holds goes to the buffer
// without them; a stop after that append, before the intent file is removed,
// must not append the entry a second time at the next start.
func TestRetentionLedgerPartlyHeldNotWrittenTwice(t *testing.T) {
	cfg := retentionConfig(t, "log")
	buf, err := OpenBuffer(cfg, buffer.Options{SegmentBytes: 4096, MaxBytes: 64 << 10})
	require.NoError(t, err)
	first := fillPastRetention(t, buf, func(int) string { return "temp" })
	require.NoError(t, buf.Close())
	// Retention's entry lists [0, first+3): the stop came before the
	// deletion of the last three was durable.
	path := filepath.Join(cfg.DataDir, intentFile)
	intent := encodeIntent([]intentEntry{{after: first + 3, rec: event.LedgerRecord{
		Reason: event.LossEvictedUnsynced, Stream: "temp", Count: first + 3, Ranges: []event.OffsetRange{{First: 0, Len: first + 3}}}}})
	require.NoError(t, os.WriteFile(path, intent, 0o600))

	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, n.Close())
	// The stop came after the append, before the file was removed.
	require.NoError(t, os.WriteFile(path, intent, 0o600))

	n, err = Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer n.Close()
	times, _ := retentionListed(t, n.buf)
	for off := range first {
		require.Equal(t, 1, times[off], "offset %d listed once", off)
	}
	require.Len(t, times, int(first), "only deleted records are listed")
	_, err = os.Stat(path)
	require.ErrorIs(t, err, os.ErrNotExist)
}
