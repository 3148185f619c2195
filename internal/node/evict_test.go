package node

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// TestStartFinishesARemoval: a node stopped after writing the ledger records
// of a removal but before removing the records (the mark still set) removes
// them at its next start, before anything syncs, so that the ledger and the
// buffer agree: the listed records are gone, every other one is there.
func TestStartFinishesARemoval(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Mode = "off"
	cfg.Windows.Enabled = false
	cfg.Buffer.SegmentBytes = 4096
	cfg.Buffer.MaxBytes = 1 << 20

	buf, err := OpenBuffer(cfg, buffer.Options{SegmentBytes: 4096, MaxBytes: 1 << 20})
	require.NoError(t, err)
	for i := range 2000 {
		e := event.Event{DeviceID: "d", Stream: "temp", TS: 1_700_000_000_000 + int64(i), Value: float64(i)}
		_, err := buf.Append(e.AppendBinary(nil))
		require.NoError(t, err)
	}
	l := event.LedgerRecord{Reason: event.LossDropped, Stream: "temp", Count: 60,
		Ranges: []event.OffsetRange{{First: 100, Len: 50}, {First: 300, Len: 10}}}
	ledgerAt := buf.NextOffset()
	require.NoError(t, buf.CommitCursor(removingCursor, ledgerAt+1))
	_, err = buf.Append(l.AppendBinary(nil))
	require.NoError(t, err)
	require.NoError(t, buf.Close())

	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer n.Close()
	done, _ := n.buf.Cursor(removedCursor)
	require.Equal(t, ledgerAt+1, done, "the removal is marked done")
	held := map[uint64]bool{}
	r := n.buf.NewReader(0)
	defer r.Close()
	for {
		off, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		held[off] = true
	}
	for off := range ledgerAt + 1 {
		listed := (off >= 100 && off < 150) || (off >= 300 && off < 310)
		require.Equal(t, !listed, held[off], "offset %d", off)
	}
}

// A ledger record never outgrows the buffer's record limit: an entry listing
// more ranges than maxLedgerRanges is cut into several, each counting its own.
func TestLedgerRangesSplit(t *testing.T) {
	l := event.LedgerRecord{Reason: event.LossDropped, Stream: "temp"}
	for i := range uint64(2*maxLedgerRanges + 5) {
		l.Ranges = append(l.Ranges, event.OffsetRange{First: 3 * i, Len: 2})
		l.Count += 2
	}
	parts := splitRanges(l)
	require.Len(t, parts, 3)
	var total uint64
	for _, p := range parts {
		require.LessOrEqual(t, len(p.Ranges), maxLedgerRanges)
		require.Less(t, len(p.AppendBinary(nil)), buffer.MaxRecordSize)
		var n uint64
		for _, r := range p.Ranges {
			n += r.Len
		}
		require.Equal(t, n, p.Count)
		total += p.Count
	}
	require.Equal(t, l.Count, total)
	require.Equal(t, l.Ranges[2*maxLedgerRanges], parts[2].Ranges[0])
}
