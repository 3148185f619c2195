package store

import (
	"context"
	"fmt"
	"math"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

type fixture struct {
	fs  *vfs.MemFS
	log *buffer.Log
	s   *Store
	now time.Time
	// noContentDedup opens the store with ingest.dedup_without_id: off.
	noContentDedup bool
}

func newFixture(t *testing.T) *fixture { return newFixtureWith(t, &fixture{}) }

// newFixtureWith opens f's store over a new in-memory log at t0.
func newFixtureWith(t *testing.T, f *fixture) *fixture {
	f.fs, f.now = vfs.NewMem(), t0
	f.open(t)
	t.Cleanup(func() { f.log.Close() })
	return f
}

func (f *fixture) open(t *testing.T) {
	t.Helper()
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: f.fs, SegmentBytes: 8192, MaxBytes: 1 << 30})
	require.NoError(t, err)
	s, err := Open(l, Options{now: func() time.Time { return f.now }, DedupWindow: time.Minute,
		NoContentDedup: f.noContentDedup})
	require.NoError(t, err)
	f.log, f.s = l, s
}

func (f *fixture) reopen(t *testing.T) {
	t.Helper()
	require.NoError(t, f.log.Close())
	f.open(t)
}

func ev(dev, stream string, ts time.Time, v float64) event.Event {
	return event.Event{DeviceID: dev, Stream: stream, TS: ts.UnixMilli(), Value: v}
}

func values(p Page) []float64 {
	var out []float64
	for _, e := range p.Events {
		out = append(out, e.Value)
	}
	return out
}

func TestQueryFiltersAndPages(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// 3 devices × 2 streams, one event a second for 2000 s, interleaved.
	for i := range 2000 {
		var batch []event.Event
		for d := range 3 {
			for _, st := range []string{"temp", "hum"} {
				batch = append(batch, ev(fmt.Sprintf("dev-%d", d), st, t0.Add(time.Duration(i)*time.Second), float64(i)))
			}
		}
		res, err := f.s.Append(ctx, batch)
		require.NoError(t, err)
		require.Equal(t, 6, res.Stored)
	}

	p, err := f.s.Query(Query{DeviceID: "dev-1", Stream: "temp", Limit: 5})
	require.NoError(t, err)
	require.Equal(t, []float64{1999, 1998, 1997, 1996, 1995}, values(p), "newest first")
	for _, e := range p.Events {
		require.Equal(t, "dev-1", e.DeviceID)
		require.Equal(t, "temp", e.Stream)
	}

	// Time range, paged through with the cursor: every event once.
	q := Query{DeviceID: "dev-2", From: t0.Add(100 * time.Second), To: t0.Add(1100 * time.Second), Limit: 333}
	seen := map[string]int{}
	pages := 0
	for {
		p, err := f.s.Query(q)
		require.NoError(t, err)
		pages++
		for _, e := range p.Events {
			require.Equal(t, "dev-2", e.DeviceID)
			require.GreaterOrEqual(t, e.TS, q.From.UnixMilli())
			require.Less(t, e.TS, q.To.UnixMilli())
			seen[fmt.Sprint(e.Stream, e.Value)]++
		}
		if p.Next == 0 {
			break
		}
		q.Before = p.Next
	}
	require.Len(t, seen, 2000, "1000 seconds × 2 streams")
	for k, n := range seen {
		require.Equal(t, 1, n, k)
	}
	require.Equal(t, 7, pages)

	// Stream only, and no filter at all.
	p, err = f.s.Query(Query{Stream: "hum", Limit: 4})
	require.NoError(t, err)
	require.Equal(t, []float64{1999, 1999, 1999, 1998}, values(p))
	for _, e := range p.Events {
		require.Equal(t, "hum", e.Stream)
	}
	p, err = f.s.Query(Query{Limit: 12000})
	require.NoError(t, err)
	require.Len(t, p.Events, MaxLimit)

	// Unknown device: empty, no error.
	p, err = f.s.Query(Query{DeviceID: "nobody"})
	require.NoError(t, err)
	require.Empty(t, p.Events)

	// The index is rebuilt on open and answers the same.
	before, _ := f.s.Query(Query{DeviceID: "dev-0", From: t0.Add(500 * time.Second), Limit: 50})
	f.reopen(t)
	after, err := f.s.Query(Query{DeviceID: "dev-0", From: t0.Add(500 * time.Second), Limit: 50})
	require.NoError(t, err)
	require.Equal(t, before, after)
}

func TestQueryReadsOnlyIndexedRuns(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// A rare device appears once at the start, then a flood of others.
	_, err := f.s.Append(ctx, []event.Event{ev("rare", "s", t0, 1)})
	require.NoError(t, err)
	for i := range 3 * runSpan / 1000 {
		batch := make([]event.Event, 1000)
		for j := range batch {
			batch[j] = ev("busy", "s", t0.Add(time.Duration(i)*time.Second), 0)
		}
		_, err := f.s.Append(ctx, batch)
		require.NoError(t, err)
	}
	runs, ok := f.s.idx.runs("rare", "", math.MinInt64, math.MaxInt64)
	require.True(t, ok)
	require.Equal(t, []run{{first: 0, last: 0, minTS: t0.UnixMilli(), maxTS: t0.UnixMilli()}}, runs)
	p, err := f.s.Query(Query{DeviceID: "rare"})
	require.NoError(t, err)
	require.Len(t, p.Events, 1)
}

func TestDuplicatesStoredOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	e := ev("d", "s", t0, 1)
	e.ID = "m-1"
	res, err := f.s.Append(ctx, []event.Event{e, e}) // a retry inside one batch
	require.NoError(t, err)
	require.Equal(t, ingest.Result{Stored: 1, Duplicates: 1}, res)
	res, err = f.s.Append(ctx, []event.Event{e})
	require.NoError(t, err)
	require.Equal(t, ingest.Result{Stored: 0, Duplicates: 1}, res)

	// Another device may use the same id.
	other := e
	other.DeviceID = "d2"
	res, err = f.s.Append(ctx, []event.Event{other})
	require.NoError(t, err)
	require.Equal(t, 1, res.Stored)

	// The id is remembered across a restart...
	f.reopen(t)
	res, err = f.s.Append(ctx, []event.Event{e})
	require.NoError(t, err)
	require.Equal(t, 1, res.Duplicates)
	// ...until the window has passed.
	f.now = f.now.Add(2 * time.Minute)
	res, err = f.s.Append(ctx, []event.Event{e})
	require.NoError(t, err)
	require.Equal(t, 1, res.Stored)

	p, err := f.s.Query(Query{DeviceID: "d"})
	require.NoError(t, err)
	require.Len(t, p.Events, 2)
}

func TestConcurrentRetriesWaitForTheOriginal(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := ingest.Result{}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				e := ev("d", "s", t0, float64(i))
				e.ID = fmt.Sprint("id-", i)
				res, err := f.s.Append(ctx, []event.Event{e})
				if err != nil {
					t.Error(err)
					return
				}
				// Acknowledged means durable: the original is readable now.
				p, err := f.s.Query(Query{DeviceID: "d", Limit: MaxLimit})
				if err != nil {
					t.Error(err)
					return
				}
				found := false
				for _, got := range p.Events {
					found = found || got.ID == e.ID
				}
				if !found {
					t.Errorf("acked %s not readable", e.ID)
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
}

func TestFailedWriteForgetsIDs(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	e := ev("d", "s", t0, 1)
	e.ID = "m-1"
	f.fs.Inject(func(op vfs.Op, _ string) error {
		if op == vfs.OpSync {
			return syscall.EIO
		}
		return nil
	})
	_, err := f.s.Append(ctx, []event.Event{e})
	require.ErrorIs(t, err, ingest.ErrUnavailable)
	f.fs.Inject(nil)
	// The node restarts after a failed log (here: with the machine, so the
	// unsynced write is gone); the retry is stored, not taken for a duplicate
	// of the write that failed.
	f.fs.Crash(nil)
	f.reopen(t)
	res, err := f.s.Append(ctx, []event.Event{e})
	require.NoError(t, err)
	require.Equal(t, 1, res.Stored)
}

func TestDedupBoundedByMaxEntries(t *testing.T) {
	d := newDedup(time.Hour, 100)
	for i := range 1000 {
		c := newClaim()
		_, dup := d.check("d", fmt.Sprint(i), int64(i), c)
		require.False(t, dup)
	}
	require.Equal(t, 100, d.len())
	require.Equal(t, uint64(900), d.evictedCount())
}
