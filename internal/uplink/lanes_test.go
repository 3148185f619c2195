package uplink

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
)

func TestLaneRulesEpochs(t *testing.T) {
	dir := t.TempDir()
	load := func(p map[string]string, next uint64) *LaneRules {
		t.Helper()
		r, err := LoadLaneRules(vfs.OS, dir, p, next)
		require.NoError(t, err)
		return r
	}
	r := load(map[string]string{"door": "critical", "temp": "normal"}, 0)
	require.Len(t, r.Epochs, 1)
	require.Equal(t, map[string]string{"door": "critical"}, r.Epochs[0].Streams, "normal is not written")

	// Same rules later: no new epoch. Changed rules: one from the next offset.
	require.Len(t, load(map[string]string{"door": "critical"}, 50).Epochs, 1)
	r = load(map[string]string{"door": "high", "hvac": "low"}, 100)
	require.Len(t, r.Epochs, 2)
	require.Equal(t, uint64(100), r.Epochs[1].From)
	// Changed again before anything was written: the last epoch is replaced.
	r = load(map[string]string{"door": "critical", "hvac": "low"}, 100)
	require.Len(t, r.Epochs, 2)

	// A record takes the rules of the epoch its offset falls in.
	require.Equal(t, LaneCritical, r.streamLane(99, "door"))
	require.Equal(t, LaneNormal, r.streamLane(99, "hvac"))
	require.Equal(t, LaneLow, r.streamLane(100, "hvac"))
	require.Equal(t, LaneNormal, r.streamLane(1000, "other"))
	require.True(t, r.Possible(LaneLow))
	fixed, err := FixedLanes(nil)
	require.NoError(t, err)
	require.False(t, fixed.Possible(LaneLow))

	_, err = LoadLaneRules(vfs.OS, dir, map[string]string{"x": "urgent"}, 100)
	require.ErrorContains(t, err, `stream "x": unknown priority "urgent"`)
	require.NoError(t, os.WriteFile(filepath.Join(dir, lanesFile), []byte(`{"epochs":[{"from":5}]}`), 0o600))
	_, err = LoadLaneRules(vfs.OS, dir, nil, 100)
	require.ErrorContains(t, err, "first epoch must start at offset 0")
}

func TestClassify(t *testing.T) {
	r, err := FixedLanes(map[string]string{"door": "critical", "hvac": "low"})
	require.NoError(t, err)
	ev := func(stream string) []byte {
		return (&event.Event{DeviceID: "d", Stream: stream, TS: 1_700_000_000_000}).AppendBinary(nil)
	}
	al := func(stream, sev string) []byte {
		a := event.AlertRecord{Rule: "r", Stream: stream, Severity: sev, Firing: true, FiredAt: 1_700_000_000_000}
		return a.AppendBinary(nil)
	}
	for _, tc := range []struct {
		p    []byte
		lane Lane
	}{
		{ev("door"), LaneCritical},
		{ev("temp"), LaneNormal},
		{ev("hvac"), LaneLow},
		{al("hvac", "info"), LaneHigh},
		{al("hvac", "critical"), LaneCritical},
		{al("door", "warning"), LaneCritical},
		{al("temp", "warning"), LaneHigh},
	} {
		lane, _, ok := r.classify(1, tc.p, LaneCritical)
		require.True(t, ok)
		require.Equal(t, tc.lane, lane, "%x", tc.p[:2])
	}
	lane, _, ok := r.classify(1, []byte{event.TypeLate, 1}, LaneNormal)
	require.True(t, ok)
	require.Equal(t, LaneNormal, lane, "late marks take the normal lane")
	_, _, ok = r.classify(1, []byte{0x7f, 1}, LaneNormal)
	require.False(t, ok, "unknown types are not synced")
}

// laneSink records what it is sent; it fails the sends listed in failAt.
type laneSink struct {
	mu     sync.Mutex
	sends  [][]Record
	failAt map[int]bool
	calls  int
}

func (s *laneSink) Name() string                                                     { return "lanes" }
func (s *laneSink) Resume(context.Context, map[Lane]uint64, map[string]uint64) error { return nil }
func (s *laneSink) Positions() map[string]uint64                                     { return nil }
func (s *laneSink) Close() error                                                     { return nil }
func (s *laneSink) Send(_ context.Context, recs []Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.failAt[s.calls] {
		return fmt.Errorf("send %d fails", s.calls)
	}
	s.sends = append(s.sends, slices.Clone(recs))
	return nil
}

func (s *laneSink) got() [][]Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sends)
}

// TestCriticalLaneDrainsFirst builds a backlog of normal, low and critical
// events, then syncs it: every critical record is sent before any other, high
// (alerts) before normal, normal before low; each lane in offset order; every
// record once, also when sends fail along the way. Lanes with nothing waiting
// still move their cursors, so none holds back the sync position.
func TestCriticalLaneDrainsFirst(t *testing.T) {
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	streams := []string{"temp", "temp", "hvac", "temp", "door"}
	var ps [][]byte
	for i := range 5000 {
		if i%97 == 0 {
			a := event.AlertRecord{Rule: "r", Stream: "temp", Severity: "warning", Firing: true, FiredAt: int64(1_700_000_000_000 + i)}
			ps = append(ps, a.AppendBinary(nil))
			continue
		}
		e := event.Event{DeviceID: "d", Stream: streams[i%len(streams)], TS: int64(1_700_000_000_000 + i), Value: float64(i)}
		ps = append(ps, e.AppendBinary(nil))
	}
	_, err = l.Append(ps...)
	require.NoError(t, err)
	rules, err := FixedLanes(map[string]string{"door": "critical", "hvac": "low"})
	require.NoError(t, err)
	sink := &laneSink{failAt: map[int]bool{2: true, 5: true, 9: true}}
	s := NewSyncer(l, sink, SyncOptions{BatchRecords: 100, MaxDelay: time.Millisecond, Lanes: rules,
		Retry: RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}})
	s.Start()
	deadline := time.Now().Add(20 * time.Second)
	for s.Status().SyncedOffset < l.DurableOffset() {
		require.True(t, time.Now().Before(deadline), "not synced: %+v", s.Status())
		time.Sleep(5 * time.Millisecond)
	}
	require.NoError(t, s.Close())

	seen := map[uint64]bool{}
	lastLane, lastOff := LaneCritical, map[Lane]uint64{}
	for _, batch := range sink.got() {
		lane := batch[0].Lane
		require.GreaterOrEqual(t, lane, lastLane, "lane %v sent after %v: the backlog drains by priority", lane, lastLane)
		lastLane = lane
		for _, r := range batch {
			require.Equal(t, lane, r.Lane, "one lane per batch")
			require.False(t, seen[r.Offset], "offset %d sent twice", r.Offset)
			seen[r.Offset] = true
			if prev, ok := lastOff[lane]; ok {
				require.Greater(t, r.Offset, prev, "lane %v out of order", lane)
			}
			lastOff[lane] = r.Offset
			want, _, _ := rules.classify(r.Offset, ps[r.Offset], lane)
			require.Equal(t, want, lane)
		}
	}
	require.Len(t, seen, len(ps))
	st := s.Status()
	require.Len(t, st.Lanes, 4)
	for _, ls := range st.Lanes {
		require.Equal(t, l.DurableOffset(), ls.SyncedOffset, "lane %s", ls.Lane)
	}
}
