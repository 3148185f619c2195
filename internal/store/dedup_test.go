package store

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
)

// reading is an id-less event whose device gave its ts.
func reading(dev string, ts time.Time, v float64, tags map[string]string) event.Event {
	e := ev(dev, "s", ts, v)
	e.Tags = tags
	return e
}

func appendOne(t *testing.T, s *Store, e event.Event) ingest.Result {
	t.Helper()
	res, err := s.Append(context.Background(), []event.Event{e})
	require.NoError(t, err)
	return res
}

func stored(t *testing.T, s *Store, dev string) int {
	t.Helper()
	p, err := s.Query(Query{DeviceID: dev, Limit: MaxLimit})
	require.NoError(t, err)
	return len(p.Events)
}

func TestContentDedupSameContentStoredOnce(t *testing.T) {
	f := newFixture(t)
	e := reading("d", t0, 21.5, map[string]string{"room": "a", "floor": "1"})
	res, err := f.s.Append(context.Background(), []event.Event{e, e}) // a retry inside one batch
	require.NoError(t, err)
	require.Equal(t, ingest.Result{Stored: 1, Duplicates: 1}, res)
	require.Equal(t, ingest.Result{Duplicates: 1}, appendOne(t, f.s, e))

	// The same tags built in another order are the same content.
	same := e
	same.Tags = map[string]string{"floor": "1", "room": "a"}
	require.Equal(t, ingest.Result{Duplicates: 1}, appendOne(t, f.s, same))
	// A received time set by the caller is not part of the content.
	same.Received = f.now.Add(time.Second).UnixMilli()
	require.Equal(t, ingest.Result{Duplicates: 1}, appendOne(t, f.s, same))
	require.Equal(t, 1, stored(t, f.s, "d"))
}

func TestContentDedupDifferentContentStored(t *testing.T) {
	f := newFixture(t)
	base := reading("d", t0, 21.5, map[string]string{"room": "a"})
	require.Equal(t, 1, appendOne(t, f.s, base).Stored)

	variants := map[string]func(e *event.Event){
		"value":       func(e *event.Event) { e.Value = 21.6 },
		"zero":        func(e *event.Event) { e.Value = 0 },
		"ts":          func(e *event.Event) { e.TS++ },
		"tag value":   func(e *event.Event) { e.Tags = map[string]string{"room": "b"} },
		"tag key":     func(e *event.Event) { e.Tags = map[string]string{"zone": "a"} },
		"extra tag":   func(e *event.Event) { e.Tags = map[string]string{"room": "a", "x": ""} },
		"no tags":     func(e *event.Event) { e.Tags = nil },
		"stream":      func(e *event.Event) { e.Stream = "s2" },
		"device":      func(e *event.Event) { e.DeviceID = "d2" },
		"device+strm": func(e *event.Event) { e.DeviceID, e.Stream = "d\x01", "s" },
	}
	n := 1
	for name, change := range variants {
		e := base
		change(&e)
		require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, e), name)
		n++
	}
	p, err := f.s.Query(Query{Limit: MaxLimit})
	require.NoError(t, err)
	require.Len(t, p.Events, n)

	// An event with an id is matched on its id, never on content: the same
	// content with an id is stored, and so is the same content with
	// another id.
	withID := base
	withID.ID = "m-1"
	require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, withID))
	withID.ID = "m-2"
	require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, withID))
}

func TestContentDedupNotWithoutDeviceTS(t *testing.T) {
	f := newFixture(t)
	// Two identical readings with no ts, parsed in the same millisecond: the
	// node gave both the same ts, and both are real readings.
	now := f.now
	a, err := event.ParseMQTT("d", "s", []byte(`21.5`), now, event.Limits{})
	require.NoError(t, err)
	b, err := event.ParseMQTT("d", "s", []byte(`{"value":21.5}`), now, event.Limits{})
	require.NoError(t, err)
	require.True(t, a.TSAssigned && b.TSAssigned)
	res, err := f.s.Append(context.Background(), []event.Event{a, b})
	require.NoError(t, err)
	require.Equal(t, ingest.Result{Stored: 2}, res)
	require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, a))
	require.Equal(t, 3, stored(t, f.s, "d"))
}

func TestContentDedupOff(t *testing.T) {
	f := newFixtureWith(t, &fixture{noContentDedup: true})
	e := reading("d", t0, 21.5, nil)
	res, err := f.s.Append(context.Background(), []event.Event{e, e})
	require.NoError(t, err)
	require.Equal(t, ingest.Result{Stored: 2}, res)
	f.reopen(t)
	require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, e))
	require.Equal(t, 3, stored(t, f.s, "d"))

	// Turned on again at a restart, it knows the content stored while off.
	f.noContentDedup = false
	f.reopen(t)
	require.Equal(t, ingest.Result{Duplicates: 1}, appendOne(t, f.s, e))
	require.Equal(t, 3, stored(t, f.s, "d"))
}

func TestContentDedupAcrossRestart(t *testing.T) {
	f := newFixture(t)
	e := reading("d", t0, 21.5, map[string]string{"room": "a"})
	other := reading("d", t0.Add(time.Second), 21.5, map[string]string{"room": "a"})
	require.Equal(t, 1, appendOne(t, f.s, e).Stored)

	// The content is remembered across a restart...
	f.reopen(t)
	require.Equal(t, ingest.Result{Duplicates: 1}, appendOne(t, f.s, e))
	require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, other))
	f.reopen(t)
	require.Equal(t, ingest.Result{Duplicates: 1}, appendOne(t, f.s, other))
	require.Equal(t, 2, stored(t, f.s, "d"))

	// ...until the window (a minute here) has passed, measured from when
	// the node received it.
	f.now = f.now.Add(2 * time.Minute)
	f.reopen(t)
	require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, e))
	require.Equal(t, 3, stored(t, f.s, "d"))
	// And without a restart too.
	f.now = f.now.Add(2 * time.Minute)
	require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, e))
	require.Equal(t, 4, stored(t, f.s, "d"))
}

func TestContentDedupFailedWriteForgets(t *testing.T) {
	f := newFixture(t)
	e := reading("d", t0, 1, nil)
	f.fs.Inject(func(op vfs.Op, _ string) error {
		if op == vfs.OpSync {
			return syscall.EIO
		}
		return nil
	})
	_, err := f.s.Append(context.Background(), []event.Event{e})
	require.ErrorIs(t, err, ingest.ErrUnavailable)
	f.fs.Inject(nil)
	f.fs.Crash(nil)
	f.reopen(t)
	require.Equal(t, ingest.Result{Stored: 1}, appendOne(t, f.s, e))
}

func TestContentKey(t *testing.T) {
	d := newDedup(time.Minute, 10)
	e := reading("d", t0, 1, map[string]string{"a": "1", "b": "2"})
	e.Received = t0.UnixMilli()
	k1, ok := d.contentKey(e.AppendBinary(nil))
	require.True(t, ok)
	require.NotEqual(t, d.idKey("d", "x"), k1)
	e.Received += 12345
	k2, ok := d.contentKey(e.AppendBinary(nil))
	require.True(t, ok)
	require.Equal(t, k1, k2, "the received time is not content")
	e.Value = 2
	k3, _ := d.contentKey(e.AppendBinary(nil))
	require.NotEqual(t, k1, k3)
	for _, p := range [][]byte{nil, {event.TypeEvent}, {event.TypeEvent, 0}, {event.TypeEvent, 0, 2}} {
		_, ok := d.contentKey(p)
		require.False(t, ok, "%x", p)
	}
}

func TestDedupMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: vfs.NewMem(), SegmentBytes: 8192, MaxBytes: 1 << 30})
	require.NoError(t, err)
	defer l.Close()
	s, err := Open(l, Options{now: func() time.Time { return t0 }, DedupMaxEntries: 2, Metrics: m})
	require.NoError(t, err)
	for i := range 3 {
		require.Equal(t, 1, appendOne(t, s, reading("d", t0.Add(time.Duration(i)*time.Second), 1, nil)).Stored)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			got[mf.GetName()] = mm.GetGauge().GetValue() + mm.GetCounter().GetValue()
		}
	}
	require.Equal(t, 2.0, got["holdfast_dedup_keys"])
	require.Equal(t, 1.0, got["holdfast_dedup_evicted_total"])
}

// TestContentDedupConcurrentRetries: retries racing their original are
// acknowledged only once it is durable, and stored once, as for ids.
func TestContentDedupConcurrentRetries(t *testing.T) {
	f := newFixture(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := ingest.Result{}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				e := reading("d", t0.Add(time.Duration(i)*time.Millisecond), float64(i), nil)
				res, err := f.s.Append(context.Background(), []event.Event{e})
				if err != nil {
					t.Error(err)
					return
				}
				p, err := f.s.Query(Query{DeviceID: "d", Limit: MaxLimit})
				if err != nil {
					t.Error(err)
					return
				}
				found := false
				for _, got := range p.Events {
					found = found || got.TS == e.TS
				}
				if !found {
					t.Errorf("acked reading %d not readable", i)
				}
				mu.Lock()
				total.Stored += res.Stored
				total.Duplicates += res.Duplicates
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, ingest.Result{Stored: 50, Duplicates: 15 * 50}, total)
	require.Equal(t, 50, stored(t, f.s, "d"))
}

// TestDuplicatesInsideABatchLeaveTheOthersIntact: a batch mixing new events
// with retries of each other and of stored events, by id and by content, at
// its start, middle and end, stores exactly the new ones, each once, in the
// batch's order and with their own values.
func TestDuplicatesInsideABatchLeaveTheOthersIntact(t *testing.T) {
	f := newFixture(t)
	withID := func(id string, v float64) event.Event {
		e := ev("d", "s", t0.Add(time.Duration(v)*time.Millisecond), v)
		e.ID = id
		return e
	}
	old := withID("old", 1)
	oldReading := reading("d", t0.Add(time.Second), 2, nil)
	appendOne(t, f.s, old)
	appendOne(t, f.s, oldReading)

	a, b := withID("a", 10), reading("d", t0.Add(11*time.Millisecond), 11, map[string]string{"k": "v"})
	c, d := withID("c", 12), reading("d", t0.Add(13*time.Millisecond), 13, nil)
	batch := []event.Event{old, a, b, oldReading, a, c, b, d, d, old}
	res, err := f.s.Append(context.Background(), batch)
	require.NoError(t, err)
	require.Equal(t, ingest.Result{Stored: 4, Duplicates: 6}, res)

	p, err := f.s.Query(Query{DeviceID: "d", Limit: MaxLimit})
	require.NoError(t, err)
	var values []float64
	for _, s := range p.Events {
		values = append(values, s.Value)
	}
	require.ElementsMatch(t, []float64{1, 2, 10, 11, 12, 13}, values, "each event once, with its own value")
	require.Equal(t, uint64(6), f.s.log.DurableOffset(), "the log holds the six events, no duplicate")
}
