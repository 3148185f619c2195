package store

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// TestOutputsOnly: a store opened for outputs only over a log of events
// indexes none of them, appends outputs to the same log, and refuses events.
func TestOutputsOnly(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.s.Append(ctx, []event.Event{ev("d1", "temp", t0, 1), ev("d2", "temp", t0, 2)})
	require.NoError(t, err)
	require.NoError(t, f.log.Close())
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: f.fs, SegmentBytes: 8192, MaxBytes: 1 << 30})
	require.NoError(t, err)
	f.log = l
	s, err := Open(l, Options{OutputsOnly: true})
	require.NoError(t, err)
	require.Zero(t, s.idx.devices())
	require.Zero(t, s.dedup.len())

	off, err := s.AppendOutputs([]Output{{Window: &event.WindowRecord{Stream: "temp", SizeMS: 60_000, Start: t0.UnixMilli(), Count: 1}}})
	require.NoError(t, err)
	require.Equal(t, uint64(2), off)
	_, err = s.Append(ctx, []event.Event{ev("d1", "temp", t0, 3)})
	require.ErrorContains(t, err, "outputs only")
	require.Equal(t, uint64(3), l.NextOffset())
}
