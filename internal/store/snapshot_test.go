package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// TestIndexFileOpensLikeARebuild runs a random workload (events with ids,
// id-less with and without their own ts, retries, window results and late
// marks, evictions and removals of records) through restarts of five kinds: a
// clean stop (the index file is written), a SIGKILL (only the last periodic
// file, unsynced bytes lost), a torn or damaged index file, and a clean stop
// after which a sealed segment is damaged. After each, a store opened from
// the index file and the log after it answers every query exactly as one
// that read the whole log, and remembers exactly the retries the stopped
// store remembered when it wrote the file, and those of the log after it.
func TestIndexFileOpensLikeARebuild(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 8))
	fs := vfs.NewMem()
	path := filepath.Join(t.TempDir(), "store-index")
	now := t0
	opts := func(file bool) Options {
		o := Options{now: func() time.Time { return now }, DedupWindow: time.Minute}
		if file {
			o.SnapshotPath = path
		}
		return o
	}
	openLog := func() *buffer.Log {
		l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: fs, SegmentBytes: 4096, MaxBytes: 1 << 30})
		require.NoError(t, err)
		return l
	}
	l := openLog()
	defer func() { l.Close() }()
	s, err := Open(l, opts(true))
	require.NoError(t, err)
	// The de-duplication set each index file holds, by its S.
	fileSets := map[uint64][]orderEntry{}
	written := func() { fileSets[s.snapNext.Load()] = s.dedup.stored() }

	streams := []string{"temp", "hum", "co2"}
	var recent []event.Event // for retries
	next := 0
	fromFile := 0
	for round := range 30 {
		for range 20 {
			var batch []event.Event
			for range 1 + rng.IntN(10) {
				if len(recent) > 0 && rng.IntN(8) == 0 {
					batch = append(batch, recent[rng.IntN(len(recent))]) // a retry
					continue
				}
				e := ev(fmt.Sprint("dev-", rng.IntN(7)), streams[rng.IntN(3)],
					now.Add(-time.Duration(rng.IntN(100))*time.Second), float64(next))
				next++
				switch rng.IntN(4) {
				case 0:
					e.ID = fmt.Sprint("id-", rng.IntN(3000))
				case 1:
					e.TSAssigned = true
				}
				batch = append(batch, e)
				recent = append(recent, e)
				if len(recent) > 200 {
					recent = recent[100:]
				}
			}
			_, err := s.Append(ctx, batch)
			require.NoError(t, err)
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		}
		if rng.IntN(2) == 0 {
			end := l.DurableOffset()
			w := event.WindowRecord{Stream: streams[rng.IntN(3)], Start: now.UnixMilli(), SizeMS: 60_000,
				Count: 1, Sum: 1, Min: 1, Max: 1}
			_, err := s.AppendOutputs([]Output{{Window: &w}, {Late: []uint64{end - 3, end - 1}}})
			require.NoError(t, err)
		}
		switch rng.IntN(4) {
		case 0:
			require.NoError(t, s.WriteSnapshot()) // as every 2^20 records
			written()
		case 1:
			_, err := l.DeleteBefore(l.FirstOffset() + uint64(rng.IntN(300)))
			require.NoError(t, err)
		case 2:
			// Events, as the pressure levels remove (a removed late mark
			// would stay in the running store's memory, and in its index
			// file, but not in a rebuild).
			var offs []uint64
			for o := l.FirstOffset() + uint64(rng.IntN(50)); o < l.DurableOffset(); o += 1 + uint64(rng.IntN(200)) {
				if isEvent(t, l, o) {
					offs = append(offs, o)
				}
			}
			_, err := l.Remove(offs, func(h []uint64) []uint64 { return h })
			require.NoError(t, err)
		}

		mode := rng.IntN(5)
		switch mode {
		case 0: // a clean stop
			require.NoError(t, s.Close())
			written()
		case 1: // SIGKILL: no index file written now, unsynced bytes lost
			fs.Crash(func(string, []byte) []byte { return nil })
		case 2: // a torn index file
			require.NoError(t, s.Close())
			written()
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, b[:rng.IntN(len(b))], 0o600))
		case 3: // a bit flipped in the index file
			require.NoError(t, s.Close())
			written()
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			b[rng.IntN(len(b))] ^= 1 << rng.IntN(8)
			require.NoError(t, os.WriteFile(path, b, 0o600))
		case 4: // a clean stop, then damage in a sealed segment
			require.NoError(t, s.Close())
			written()
			damageSealed(t, fs, rng)
		}
		if mode == 2 || mode == 3 {
			_, err := readSnapshot(path)
			require.Error(t, err, "round %d: a damaged index file is refused", round)
		}
		_ = l.Close()
		now = now.Add(time.Duration(rng.IntN(30)) * time.Second)
		l = openLog()
		s, err = Open(l, opts(true))
		require.NoError(t, err)
		full, err := Open(l, opts(false))
		require.NoError(t, err)
		requireSameAnswers(t, round, l, s, full)
		requireRemembers(t, round, l, s, fileSets[s.snapNext.Load()], now.Add(-time.Minute).UnixMilli())
		if s.snapNext.Load() > 0 {
			fromFile++
		}
	}
	require.Greater(t, fromFile, 10, "most restarts use the index file")
}

// isEvent reports whether the record at off is an event.
func isEvent(t *testing.T, l *buffer.Log, off uint64) bool {
	r := l.NewReader(off)
	defer r.Close()
	got, p, err := r.Next()
	require.NoError(t, err)
	return got == off && event.Type(p) == event.TypeEvent
}

// damageSealed flips a byte in an event's frame in a sealed segment (a
// damaged late mark, like a removed one, stays in the index file).
func damageSealed(t *testing.T, fs *vfs.MemFS, rng *rand.Rand) {
	t.Helper()
	names, err := fs.List("/d/log")
	require.NoError(t, err)
	var segs []string
	for _, n := range names {
		if filepath.Ext(n) == ".seg" {
			segs = append(segs, n)
		}
	}
	require.Greater(t, len(segs), 1)
	name := filepath.Join("/d/log", segs[rng.IntN(len(segs)-1)])
	b, _ := fs.Bytes(name)
	var events []int // positions of event frames
	for pos := 16; pos+16 < len(b); {
		n := int(binary.LittleEndian.Uint32(b[pos:]))
		if n == 0 || pos+16+n > len(b) {
			break // damaged before
		}
		if event.Type(b[pos+16:pos+16+n]) == event.TypeEvent {
			events = append(events, pos)
		}
		pos += 16 + n
	}
	require.NotEmpty(t, events)
	pos := events[rng.IntN(len(events))]
	b[pos+rng.IntN(16+int(binary.LittleEndian.Uint32(b[pos:])))] ^= 0x10
	fs.SetBytes(name, b)
}

// requireSameAnswers checks that a and b answer every query alike and
// remember the same de-duplication keys.
func requireSameAnswers(t *testing.T, round int, l *buffer.Log, a, b *Store) {
	t.Helper()
	queries := []Query{{}}
	for d := range 7 {
		queries = append(queries, Query{DeviceID: fmt.Sprint("dev-", d)})
	}
	for _, st := range []string{"temp", "hum", "co2"} {
		queries = append(queries, Query{Stream: st}, Query{Stream: st, From: t0.Add(10 * time.Minute), To: t0.Add(20 * time.Minute)})
	}
	for _, q := range queries {
		require.Equal(t, allEvents(t, b, q), allEvents(t, a, q), "round %d: query %+v", round, q)
	}
	for _, st := range []string{"temp", "hum", "co2"} {
		wa, err := a.QueryWindows(WindowQuery{Stream: st, Limit: MaxLimit})
		require.NoError(t, err)
		wb, err := b.QueryWindows(WindowQuery{Stream: st, Limit: MaxLimit})
		require.NoError(t, err)
		require.Equal(t, wb, wa, "round %d: windows of %s", round, st)
	}
	a.idx.mu.RLock()
	for _, m := range []map[string][]run{a.idx.byDevice, a.idx.byStream, a.idx.byWindow} {
		for k, runs := range m {
			require.GreaterOrEqual(t, runs[len(runs)-1].last, l.FirstOffset(), "round %d: %s's runs are all evicted", round, k)
		}
	}
	a.idx.mu.RUnlock()
	require.Equal(t, b.lastReceived.Load(), a.lastReceived.Load(), "round %d: received floor", round)
}

// requireRemembers checks that s's de-duplication set holds exactly the keys
// received since since of the set its index file held (file, for the S it
// was opened at; none after a full rebuild) and of the events of the log
// from S on.
func requireRemembers(t *testing.T, round int, l *buffer.Log, s *Store, file []orderEntry, since int64) {
	t.Helper()
	from := s.snapNext.Load()
	want := map[dedupKey]int64{}
	if from > 0 {
		for _, o := range file {
			if o.received >= since {
				want[o.key] = o.received
			}
		}
	}
	r := l.NewReader(from)
	defer r.Close()
	for {
		_, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if event.Type(p) != event.TypeEvent {
			continue
		}
		v, _ := event.Peek(p)
		if v.Received < since {
			continue
		}
		key := s.dedup.idKeyBytes(v.DeviceID, v.ID)
		if v.ID == nil {
			key, _ = s.dedup.contentKey(p)
		}
		want[key] = v.Received
	}
	require.Equal(t, want, s.dedup.keys(), "round %d: the de-duplication set, opened at offset %d", round, from)
}

// allEvents pages through q.
func allEvents(t *testing.T, s *Store, q Query) []Stored {
	t.Helper()
	q.Limit = MaxLimit
	var out []Stored
	for {
		p, err := s.Query(q)
		require.NoError(t, err)
		out = append(out, p.Events...)
		if p.Next == 0 {
			return out
		}
		q.Before = p.Next
	}
}

// TestIndexFileSetKeepsItsBounds: keys loaded from the index file obey the
// window and dedup_max_entries of the store that loads them, the oldest
// going first, as when they were inserted.
func TestIndexFileSetKeepsItsBounds(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store-index")
	fs := vfs.NewMem()
	now := t0
	open := func(max int) (*buffer.Log, *Store) {
		l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: fs, SegmentBytes: 4096, MaxBytes: 1 << 30})
		require.NoError(t, err)
		s, err := Open(l, Options{now: func() time.Time { return now }, DedupWindow: time.Minute, DedupMaxEntries: max, SnapshotPath: path})
		require.NoError(t, err)
		return l, s
	}
	l, s := open(1000)
	for i := range 500 {
		e := ev("d", "s", t0, float64(i))
		e.ID = fmt.Sprint(i)
		_, err := s.Append(ctx, []event.Event{e})
		require.NoError(t, err)
		now = now.Add(100 * time.Millisecond) // 50 s in all
	}
	require.NoError(t, s.Close())
	require.NoError(t, l.Close())

	l, s = open(100)
	require.Positive(t, s.snapNext.Load(), "opened from the index file")
	require.Equal(t, 100, s.dedup.len())
	for _, c := range []struct {
		id  int
		dup bool
	}{{400, true}, {499, true}, {399, false}} {
		_, dup := s.dedup.check("d", fmt.Sprint(c.id), now.UnixMilli(), newClaim())
		require.Equal(t, c.dup, dup, "id %d", c.id)
	}
	require.NoError(t, l.Close())

	now = now.Add(45 * time.Second) // ids 0-349 received more than a minute ago
	l, s = open(1000)
	defer l.Close()
	require.Positive(t, s.snapNext.Load())
	require.Equal(t, 150, s.dedup.len())
}
