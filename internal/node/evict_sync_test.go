package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pressure"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// Tests of the pressure actions racing the sync, against a real log and a
// syncer whose sink the test holds batch by batch.

// gateSink hands each batch's offsets to the test and waits for the test's
// verdict before returning from Send.
type gateSink struct {
	sends   chan []uint64
	release chan error
	noLate  bool // behave like the HTTP/MQTT sinks: late marks are not taken
}

func newGateSink(noLate bool) *gateSink {
	return &gateSink{sends: make(chan []uint64, 16), release: make(chan error), noLate: noLate}
}

func (g *gateSink) Name() string { return "gate" }
func (g *gateSink) Resume(context.Context, map[uplink.Lane]uint64, map[string]uint64) error {
	return nil
}
func (g *gateSink) Send(ctx context.Context, recs []uplink.Record) error {
	offs := make([]uint64, len(recs))
	for i, r := range recs {
		offs[i] = r.Offset
	}
	g.sends <- offs
	select {
	case err := <-g.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (g *gateSink) Positions() map[string]uint64 { return nil }
func (g *gateSink) Close() error                 { return nil }

type filteringGateSink struct{ *gateSink }

func (f filteringGateSink) Takes(t byte) bool { return t != event.TypeLate && t != event.TypeLedger }

func ev(i int) []byte {
	e := event.Event{DeviceID: "d", Stream: "temp", TS: 1_700_000_000_000 + int64(i), Value: float64(i),
		Received: time.Now().Add(-time.Hour).UnixMilli()}
	return e.AppendBinary(nil)
}

// pressureNode builds just enough of a Node for the pressure actions.
func pressureNode(t *testing.T, buf buffer.Engine, sink uplink.Sink, frac float64) (*Node, *pressureWatch, *uplink.Syncer) {
	return pressureNodeLanes(t, buf, sink, frac, nil)
}

// pressureNodeLanes is pressureNode with stream priorities.
func pressureNodeLanes(t *testing.T, buf buffer.Engine, sink uplink.Sink, frac float64, priorities map[string]string) (*Node, *pressureWatch, *uplink.Syncer) {
	lanes, err := uplink.FixedLanes(priorities)
	require.NoError(t, err)
	log := slog.New(slog.DiscardHandler)
	n := &Node{buf: buf, lanes: lanes, log: log, ledger: newLossLedger(prometheus.NewRegistry(), log, "")}
	var s *uplink.Syncer
	if sink != nil {
		s = uplink.NewSyncer(buf, sink, uplink.SyncOptions{BatchRecords: 1, Lanes: lanes,
			Retry: uplink.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}})
		n.syncs = []*uplink.Syncer{s}
	}
	th := pressure.DefaultThresholds
	th.DropFraction = frac
	w := &pressureWatch{n: n, mon: pressure.NewMonitor(th, time.Now()),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "evicted"})}
	return n, w, s
}

func ledgerListed(t *testing.T, buf buffer.Engine) map[uint64]bool {
	out := map[uint64]bool{}
	r := buf.NewReader(0)
	defer r.Close()
	for {
		_, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		if event.Type(p) != event.TypeLedger {
			continue
		}
		l, err := event.DecodeLedger(p)
		require.NoError(t, err)
		for _, rg := range l.Ranges {
			for o := rg.First; o < rg.First+rg.Len; o++ {
				out[o] = true
			}
		}
	}
}

// A sink that does not take late marks (HTTP, MQTT) has a batch of 8 events
// in flight that starts after a late mark. A drop must leave every one of
// them: the sink confirms them, and a record both in the cloud and in the
// ledger is what the ledger promises never to list.
func TestDropLeavesWhatASinkFilteringTypesHasInFlight(t *testing.T) {
	buf, err := buffer.Open(buffer.Options{Dir: t.TempDir(), SegmentBytes: 4096, MaxBytes: 1 << 30})
	require.NoError(t, err)
	defer buf.Close()
	_, err = buf.Append(event.AppendLate(nil, []uint64{0}))
	require.NoError(t, err)
	for i := 1; i < 400; i++ {
		_, err := buf.Append(ev(i))
		require.NoError(t, err)
	}
	gs := newGateSink(true)
	_, w, s := pressureNode(t, buf, filteringGateSink{gs}, 0.5)
	s.Start()
	defer s.Close()
	inFlight := <-gs.sends
	t.Logf("in flight: %v (InFlightLimit %d)", inFlight, s.InFlightLimit())

	bound, _ := w.bound()
	w.drop(buf, bound)

	listed := ledgerListed(t, buf)
	var both []uint64
	for _, o := range inFlight {
		if listed[o] {
			both = append(both, o)
		}
	}
	gs.release <- nil // the sink confirms the batch
	require.Empty(t, both, "records in flight (the sink confirms them) are also listed as dropped in the ledger")
}

type hookRemover struct {
	inner  buffer.Remover
	before func(hidden []uint64)
}

func (h hookRemover) Remove(offs []uint64, confirm func([]uint64) []uint64) ([]uint64, error) {
	return h.inner.Remove(offs, func(hidden []uint64) []uint64 {
		h.before(hidden)
		return confirm(hidden)
	})
}

// The syncer commits and reads on while a drop has its chosen records hidden.
// Every chosen record ends up either sent (the sink read it first: it stays)
// or in the ledger (removed), never neither and never both.
func TestDropRacingTheSyncLosesNothing(t *testing.T) {
	buf, err := buffer.Open(buffer.Options{Dir: t.TempDir(), SegmentBytes: 4096, MaxBytes: 1 << 30})
	require.NoError(t, err)
	defer buf.Close()
	for i := range 400 {
		_, err := buf.Append(ev(i))
		require.NoError(t, err)
	}
	gs := newGateSink(false)
	_, w, s := pressureNode(t, buf, gs, 0.5)
	s.Start()
	defer s.Close()
	first := <-gs.sends // batch 0..7 in flight
	sent := map[uint64]bool{}
	for _, o := range first {
		sent[o] = true
	}
	var hiddenSeen []uint64
	inFlight := false
	rm := hookRemover{inner: buf, before: func(hidden []uint64) {
		hiddenSeen = hidden
		gs.release <- nil // the first batch is confirmed: the syncer commits
		select {
		case next := <-gs.sends: // ... and reads on, or waits at a hidden record
			for _, o := range next {
				sent[o] = true
			}
			inFlight = true
		case <-time.After(200 * time.Millisecond):
		}
	}}
	bound, _ := w.bound()
	w.drop(rm, bound)
	if inFlight {
		gs.release <- nil // second batch confirmed
	}
	// The sync goes on: confirm a few more batches.
	for range 5 {
		select {
		case next := <-gs.sends:
			for _, o := range next {
				sent[o] = true
			}
			gs.release <- nil
		case <-time.After(time.Second):
		}
	}
	require.NotEmpty(t, hiddenSeen)
	listed := ledgerListed(t, buf)
	cur := s.LaneCursors()[uplink.LaneNormal]
	for _, o := range hiddenSeen {
		require.False(t, sent[o] && listed[o], "offset %d sent and listed as dropped", o)
		if o < cur {
			require.True(t, sent[o] || listed[o], "offset %d below the sink's cursor (%d), never sent, not in the ledger", o, cur)
		}
	}
}

// A removal whose compaction fails keeps its records hidden and listed in
// the ledger; a later removal succeeds. The next start removes the records
// of both: none listed as dropped is readable (and so sent) again.
func TestFailedRemovalFinishedAtRestart(t *testing.T) {
	fs := vfs.NewMem()
	open := func() *buffer.Log {
		l, err := buffer.Open(buffer.Options{Dir: "/d", FS: fs, SegmentBytes: 4096, MaxBytes: 1 << 30})
		require.NoError(t, err)
		return l
	}
	buf := open()
	for i := range 2000 {
		_, err := buf.Append(ev(i))
		require.NoError(t, err)
	}
	// A syncer that never gets anything confirmed (sink offline).
	gs := newGateSink(false)
	_, w, s := pressureNode(t, buf, gs, 0.1)
	s.Start()
	<-gs.sends
	bound, _ := w.bound()

	fs.Inject(func(op vfs.Op, name string) error {
		if op == vfs.OpCreate && strings.HasSuffix(name, ".seg.tmp") {
			return syscall.ENOSPC
		}
		return nil
	})
	w.drop(buf, bound) // ledger written, compaction fails
	fs.Inject(nil)
	listed1 := ledgerListed(t, buf)
	require.NotEmpty(t, listed1)
	w.drop(buf, bound) // the next 10 % go, and this removal is marked done
	ing, _ := buf.Cursor(removingCursor)
	ed, _ := buf.Cursor(removedCursor)
	t.Logf("removing=%d removed=%d, first removal listed %d records", ing, ed, len(listed1))
	go func() { gs.release <- errors.New("offline") }()
	s.Close()
	require.NoError(t, buf.Close())

	buf = open()
	defer buf.Close()
	n2 := &Node{buf: buf, log: slog.New(slog.DiscardHandler)}
	require.NoError(t, n2.finishRemovals())
	held := map[uint64]bool{}
	r := buf.NewReader(0)
	for {
		off, _, err := r.Next()
		if err != nil {
			break
		}
		held[off] = true
	}
	r.Close()
	var back []uint64
	for o := range listed1 {
		if held[o] {
			back = append(back, o)
		}
	}
	slices.Sort(back)
	require.Empty(t, back, "listed as dropped in the ledger, yet held and readable (and unsynced) after a restart")
}

// A removal whose offsets of one stream form more than 2 M ranges (every
// other offset: a stream interleaved with another) is written as several
// ledger records, each within the record size limit.
func TestLedgerOfAScatteredRemovalFits(t *testing.T) {
	buf, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer buf.Close()
	g := newLossLedger(prometheus.NewRegistry(), slog.New(slog.DiscardHandler), "")
	const n = 2_200_000
	offs := make([]uint64, n)
	streams := make([]string, n)
	for i := range offs {
		offs[i] = uint64(2 * i)
		streams[i] = "low"
	}
	require.NoError(t, g.removed(buf, event.LossDropped, offs, streams))
}

// confirmingSink confirms every batch.
type confirmingSink struct{}

func (confirmingSink) Name() string { return "ok" }
func (confirmingSink) Resume(context.Context, map[uplink.Lane]uint64, map[string]uint64) error {
	return nil
}
func (confirmingSink) Send(context.Context, []uplink.Record) error { return nil }
func (confirmingSink) Positions() map[string]uint64                { return nil }
func (confirmingSink) Close() error                                { return nil }

// The critical level evicts synced records lowest priority first, oldest
// first within a lane, and only as many as it needs: every low-priority
// record, then the oldest normal ones, no critical one.
func TestEvictSyncedLowestPriorityFirst(t *testing.T) {
	buf, err := buffer.Open(buffer.Options{Dir: t.TempDir(), SegmentBytes: 4096, MaxBytes: 1 << 30})
	require.NoError(t, err)
	defer buf.Close()
	streams := []string{"door", "temp", "hvac"}
	stream := map[uint64]string{}
	var lowBytes, normalBytes int64
	for i := range 3000 {
		st := streams[i%3]
		e := event.Event{DeviceID: "d", Stream: st, TS: 1_700_000_000_000 + int64(i), Value: float64(i)}
		p := e.AppendBinary(nil)
		off, err := buf.Append(p)
		require.NoError(t, err)
		stream[off] = st
		switch st {
		case "hvac":
			lowBytes += int64(len(p))
		case "temp":
			normalBytes += int64(len(p))
		}
	}
	_, w, s := pressureNodeLanes(t, buf, confirmingSink{}, 0.1, map[string]string{"door": "critical", "hvac": "low"})
	s.Start()
	defer s.Close()
	require.Eventually(t, func() bool {
		for _, c := range s.LaneCursors() {
			if c < buf.DurableOffset() {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond)

	bound, _ := w.bound()
	w.evictSynced(buf, bound, lowBytes+normalBytes/2)
	held := map[uint64]bool{}
	r := buf.NewReader(0)
	defer r.Close()
	for {
		off, _, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		held[off] = true
	}
	var normalKept []uint64
	for off, st := range stream {
		switch st {
		case "hvac":
			// The active segment is never compacted: its records stay.
			if off < 2900 {
				require.False(t, held[off], "low-priority record %d evicted", off)
			}
		case "door":
			require.True(t, held[off], "critical record %d kept", off)
		case "temp":
			if held[off] {
				normalKept = append(normalKept, off)
			}
		}
	}
	slices.Sort(normalKept)
	require.NotEmpty(t, normalKept, "only as many normal records as needed")
	require.Less(t, len(normalKept), 1000, "some normal records evicted")
	for off := normalKept[0]; off < 3000; off += 3 {
		if stream[off] == "temp" {
			require.True(t, held[off], "normal records go oldest first: %d", off)
		}
	}
}

// failingSink refuses every batch: its uplink is down.
type failingSink struct{ name string }

func (f failingSink) Name() string { return f.name }
func (failingSink) Resume(context.Context, map[uplink.Lane]uint64, map[string]uint64) error {
	return nil
}
func (failingSink) Send(context.Context, []uplink.Record) error { return errors.New("uplink down") }
func (failingSink) Positions() map[string]uint64                { return nil }
func (failingSink) Close() error                                { return nil }

// With one sink caught up and another down, the full level still drops:
// records the caught-up sink has confirmed are pending only for the other,
// and its reader having passed them does not make them in flight.
func TestDropWithOneSinkCaughtUp(t *testing.T) {
	buf, err := buffer.Open(buffer.Options{Dir: t.TempDir(), SegmentBytes: 4096, MaxBytes: 1 << 30})
	require.NoError(t, err)
	defer buf.Close()
	for i := range 2000 {
		_, err := buf.Append(ev(i))
		require.NoError(t, err)
	}
	n, w, up := pressureNode(t, buf, confirmingSink{}, 0.1)
	down := uplink.NewSyncer(buf, failingSink{"down"}, uplink.SyncOptions{BatchRecords: 1, Lanes: n.lanes,
		Retry: uplink.RetryOptions{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}})
	n.syncs = append(n.syncs, down)
	up.Start()
	defer up.Close()
	down.Start()
	defer down.Close()
	require.Eventually(t, func() bool { return up.LaneCursors()[uplink.LaneNormal] == buf.DurableOffset() },
		10*time.Second, time.Millisecond)

	bound, _ := w.bound()
	w.drop(buf, bound)
	listed := ledgerListed(t, buf)
	require.NotEmpty(t, listed, "the drop went ahead")
	for off := range uint64(8) { // the down sink's first batch's worth: maybe on its way
		require.False(t, listed[off], "offset %d in the down sink's window", off)
	}
}

// Downsampling while the sync reads on: a chosen record the sink reads
// before it is hidden stays, and the next downsampling does not start there
// again, which would thin the events the first pass kept a second time.
func TestDownsampleThinsOnce(t *testing.T) {
	buf, err := buffer.Open(buffer.Options{Dir: t.TempDir(), SegmentBytes: 4096, MaxBytes: 1 << 30})
	require.NoError(t, err)
	defer buf.Close()
	for i := range 400 {
		_, err := buf.Append(ev(i)) // received an hour ago: old
		require.NoError(t, err)
	}
	gs := newGateSink(false)
	_, w, s := pressureNodeLanes(t, buf, gs, 0.1, map[string]string{"temp": "low"})
	s.Start()
	defer s.Close()
	<-gs.sends // the first batch in flight
	rm := hookRemover{inner: buf, before: func([]uint64) {
		gs.release <- nil // confirmed: the syncer reads on, to the first hidden record
		time.Sleep(50 * time.Millisecond)
	}}
	held := func() int {
		n := 0
		r := buf.NewReader(0)
		defer r.Close()
		for {
			_, p, err := r.Next()
			if err != nil {
				return n
			}
			if event.Type(p) == event.TypeEvent {
				n++
			}
		}
	}
	bound, _ := w.bound()
	w.downsample(rm, bound)
	after1 := held()
	require.Less(t, after1, 100, "downsampled about 10:1")
	w.downsample(buf, bound)
	require.Equal(t, after1, held(), "the second pass thins nothing the first kept")
	go func() {
		for range gs.sends {
			gs.release <- nil
		}
	}()
}
