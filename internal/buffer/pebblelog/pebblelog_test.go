package pebblelog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/enginetest"
)

func openT(t testing.TB, dir string, maxBytes int64) *Log {
	t.Helper()
	l, err := Open(buffer.Options{Dir: dir, MaxBytes: maxBytes})
	require.NoError(t, err)
	return l
}

type rec struct {
	off     uint64
	payload []byte
}

// readAll reads every record from `from` to io.EOF.
func readAll(t testing.TB, e buffer.Engine, from uint64) []rec {
	t.Helper()
	r := e.NewReader(from)
	defer r.Close()
	var out []rec
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, rec{off, bytes.Clone(p)})
	}
}

func requireDense(t testing.TB, recs []rec, first, next uint64) {
	t.Helper()
	require.Len(t, recs, int(next-first))
	for i, r := range recs {
		require.Equal(t, first+uint64(i), r.off)
	}
}

// payload returns "s:" followed by pseudo-random (incompressible) bytes, n
// bytes in all (at least len(s)+1).
func payload(s string, n int) []byte {
	p := []byte(s + ":")
	if len(p) < n {
		var seed [32]byte
		copy(seed[:], s)
		tail := make([]byte, n-len(p))
		_, _ = rand.NewChaCha8(seed).Read(tail)
		p = append(p, tail...)
	}
	return p
}

func TestAppendRead(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 0)
	defer l.Close()
	require.Equal(t, uint64(0), l.NextOffset())
	require.Empty(t, readAll(t, l, 0))

	var sent [][]byte
	for i, n := 0, 1; i < 300; i, n = i+n, n%7+1 {
		batch := make([][]byte, n)
		for j := range batch {
			batch[j] = payload(fmt.Sprint(i+j), 1+(i+j)*37%5000)
		}
		first, err := l.Append(batch...)
		require.NoError(t, err)
		require.Equal(t, uint64(len(sent)), first)
		require.Equal(t, first+uint64(n), l.DurableOffset())
		sent = append(sent, batch...)
	}
	big := bytes.Repeat([]byte{7}, buffer.MaxRecordSize)
	first, err := l.Append(big)
	require.NoError(t, err)
	sent = append(sent, big)

	recs := readAll(t, l, 0)
	requireDense(t, recs, 0, uint64(len(sent)))
	for i, r := range recs {
		require.Equal(t, sent[i], r.payload, "record %d", i)
	}
	recs = readAll(t, l, first-3)
	requireDense(t, recs, first-3, first+1)

	for _, bad := range [][][]byte{{{}}, {nil}, {[]byte("x"), make([]byte, buffer.MaxRecordSize+1)}} {
		_, err := l.Append(bad...)
		require.ErrorIs(t, err, buffer.ErrTooLarge)
	}
	require.Equal(t, uint64(len(sent)), l.NextOffset(), "a refused append stores nothing")
	require.NoError(t, l.Err())

	s := l.Stats()
	require.Equal(t, uint64(0), s.FirstOffset)
	require.Equal(t, uint64(len(sent)), s.NextOffset)
	require.Zero(t, s.Segments)
	require.Positive(t, s.Bytes)

	require.NoError(t, l.Close())
	_, err = l.Append([]byte("late"))
	require.ErrorIs(t, err, buffer.ErrClosed)
	require.ErrorIs(t, l.Close(), buffer.ErrClosed)
	_, _, err = l.NewReader(0).Next()
	require.ErrorIs(t, err, buffer.ErrClosed)
}

// TestConcurrentAppenders: many appenders, offsets dense and unique, each
// appender's records in its own order, and a concurrent follower never sees a
// gap or a record past the durable offset.
func TestConcurrentAppenders(t *testing.T) {
	l := openT(t, t.TempDir(), 0)
	defer l.Close()
	const appenders, calls = 64, 60

	stop := make(chan struct{})
	followed := make(chan error, 1)
	go func() {
		r := l.NewReader(0)
		defer r.Close()
		want := uint64(0)
		for {
			off, _, err := r.Next()
			switch {
			case errors.Is(err, io.EOF):
				select {
				case <-stop:
					if want == l.DurableOffset() {
						followed <- nil
						return
					}
				default:
				}
				time.Sleep(100 * time.Microsecond)
				continue
			case err != nil:
				followed <- err
				return
			case off != want:
				followed <- fmt.Errorf("follower read %d, want %d", off, want)
				return
			case off >= l.DurableOffset():
				followed <- fmt.Errorf("follower read %d at or past the durable offset", off)
				return
			}
			want++
		}
	}()

	var mu sync.Mutex
	owner := map[uint64]string{}
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range calls {
				n := 1 + (a+c)%3
				batch := make([][]byte, n)
				for j := range batch {
					batch[j] = payload(fmt.Sprintf("%d/%d/%d", a, c, j), 20+a)
				}
				first, err := l.Append(batch...)
				if !assertNoError(t, err) {
					return
				}
				require.GreaterOrEqual(t, l.DurableOffset(), first+uint64(n))
				mu.Lock()
				for j := range batch {
					if prev, dup := owner[first+uint64(j)]; dup {
						t.Errorf("offset %d given to %s and %d/%d/%d", first+uint64(j), prev, a, c, j)
					}
					owner[first+uint64(j)] = fmt.Sprintf("%d/%d/%d", a, c, j)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	require.NoError(t, <-followed)

	next := l.NextOffset()
	require.Equal(t, next, l.DurableOffset())
	require.Len(t, owner, int(next))
	recs := readAll(t, l, 0)
	requireDense(t, recs, 0, next)
	last := map[int]int{} // appender → last call seen
	for _, r := range recs {
		id, _, _ := strings.Cut(string(r.payload), ":")
		require.Equal(t, owner[r.off], id, "record %d", r.off)
		var a, c, j int
		_, err := fmt.Sscanf(id, "%d/%d/%d", &a, &c, &j)
		require.NoError(t, err)
		if p, ok := last[a]; ok {
			require.GreaterOrEqual(t, c, p, "appender %d's calls in order", a)
		}
		last[a] = c
	}
}

func assertNoError(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 0)
	require.NoError(t, l.Close())
	l = openT(t, dir, 0)
	require.Equal(t, uint64(0), l.NextOffset())
	var sent [][]byte
	for i := range 100 {
		p := payload(fmt.Sprint(i), 100+i)
		_, err := l.Append(p)
		require.NoError(t, err)
		sent = append(sent, p)
	}
	require.NoError(t, l.CommitCursor("sink", 40))
	require.NoError(t, l.Close())

	for round := range 3 {
		l = openT(t, dir, 0)
		next := uint64(len(sent))
		require.Equal(t, next, l.NextOffset(), "round %d", round)
		require.Equal(t, next, l.DurableOffset())
		require.Equal(t, uint64(0), l.FirstOffset())
		c, ok := l.Cursor("sink")
		require.True(t, ok)
		require.Equal(t, uint64(40+round), c)
		recs := readAll(t, l, 0)
		requireDense(t, recs, 0, next)
		for i, r := range recs {
			require.Equal(t, sent[i], r.payload)
		}
		first, err := l.Append([]byte("more"), []byte("and more"))
		require.NoError(t, err)
		require.Equal(t, next, first)
		sent = append(sent, []byte("more"), []byte("and more"))
		require.NoError(t, l.CommitCursor("sink", uint64(41+round)))
		require.NoError(t, l.Close())
	}
}

func TestReaderFollowsAndWaitDurable(t *testing.T) {
	l := openT(t, t.TempDir(), 0)
	defer l.Close()
	r := l.NewReader(0)
	defer r.Close()
	_, _, err := r.Next()
	require.ErrorIs(t, err, io.EOF)

	require.NoError(t, l.WaitDurable(context.Background(), 0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	require.ErrorIs(t, l.WaitDurable(ctx, 5), context.DeadlineExceeded)
	cancel()

	waited := make(chan error, 1)
	go func() { waited <- l.WaitDurable(context.Background(), 5) }()
	for i := range 10 {
		// Records far larger than a read chunk and small ones, interleaved.
		p := payload(fmt.Sprint(i), 1+i*70_000)
		off, err := l.Append(p)
		require.NoError(t, err)
		got, q, err := r.Next()
		require.NoError(t, err)
		require.Equal(t, off, got)
		require.Equal(t, p, q)
		require.Equal(t, off+1, r.Position())
		_, _, err = r.Next()
		require.ErrorIs(t, err, io.EOF)
	}
	require.NoError(t, <-waited)

	// A reader positioned past the end waits for exactly its offset.
	ahead := l.NewReader(12)
	defer ahead.Close()
	_, _, err = ahead.Next()
	require.ErrorIs(t, err, io.EOF)
	_, err = l.Append([]byte("10"), []byte("11"), []byte("12"))
	require.NoError(t, err)
	off, p, err := ahead.Next()
	require.NoError(t, err)
	require.Equal(t, uint64(12), off)
	require.Equal(t, "12", string(p))
}

func TestCursors(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 0)
	_, ok := l.Cursor("a")
	require.False(t, ok)
	require.Empty(t, l.Cursors())
	require.NoError(t, l.CommitCursors(map[string]uint64{"a": 5, "b": 7, "c": 1}))
	require.NoError(t, l.CommitCursor("a", 3), "a backward move is ignored")
	c, _ := l.Cursor("a")
	require.Equal(t, uint64(5), c)
	require.Error(t, l.CommitCursors(map[string]uint64{"a": 9, "": 1}))
	require.Error(t, l.CommitCursor(strings.Repeat("x", 256), 1))
	require.Equal(t, map[string]uint64{"a": 5, "b": 7, "c": 1}, l.Cursors(), "a refused commit changes nothing")
	m := l.Cursors()
	m["a"] = 100
	require.Equal(t, map[string]uint64{"a": 5, "b": 7, "c": 1}, l.Cursors())
	require.NoError(t, l.CommitCursors(map[string]uint64{"a": 6, "b": 8}))
	require.NoError(t, l.Close())
	require.ErrorIs(t, l.CommitCursor("a", 10), buffer.ErrClosed)

	l = openT(t, dir, 0)
	defer l.Close()
	require.Equal(t, map[string]uint64{"a": 6, "b": 8, "c": 1}, l.Cursors())
}

func TestRetention(t *testing.T) {
	const maxBytes = 1 << 20
	dir := t.TempDir()
	reg := buffer.NewMetrics(nil)
	l, err := Open(buffer.Options{Dir: dir, MaxBytes: maxBytes, Metrics: reg})
	require.NoError(t, err)
	keep := int64(l.keep)
	require.Equal(t, int64(maxBytes/2), keep, "a small buffer keeps half its limit")
	require.NoError(t, l.CommitCursor("slow", 10))
	var appended int64
	var maxDisk int64
	for i := 0; appended < 8*maxBytes; i++ {
		batch := make([][]byte, 1+i%8)
		for j := range batch {
			batch[j] = payload(fmt.Sprintf("%d-%d", i, j), 200+(i*31+j*7)%1500)
			appended += int64(len(batch[j]))
		}
		first, err := l.Append(batch...)
		require.NoError(t, err)
		stored := l.BytesFrom(0)
		require.LessOrEqual(t, stored, keep+int64(len(batch))*(1700+recordOverhead), "stored bytes after %d appended", appended)
		require.LessOrEqual(t, l.FirstOffset(), first, "the group just appended is never deleted")
		maxDisk = max(maxDisk, l.Stats().Bytes)
	}
	first, next := l.FirstOffset(), l.NextOffset()
	require.Positive(t, first)
	recs := readAll(t, l, 0)
	requireDense(t, recs, first, next)
	stored := l.BytesFrom(0)
	require.Greater(t, stored, keep-int64(l.chunk)-2000, "retention deletes no more than it must")
	require.LessOrEqual(t, stored, keep)
	require.Equal(t, float64(first), testutil.ToFloat64(reg.RetentionRecords))
	require.Equal(t, float64(first-10), testutil.ToFloat64(reg.RetentionUnread))
	require.Equal(t, float64(stored), testutil.ToFloat64(reg.Bytes))
	require.LessOrEqual(t, maxDisk, int64(2*maxBytes), "disk use")
	t.Logf("max %d KiB, appended %d KiB: stored %d KiB, disk now %d KiB, at most %d KiB; %d records deleted",
		maxBytes>>10, appended>>10, stored>>10, l.Stats().Bytes>>10, maxDisk>>10, first)
	require.NoError(t, l.Close())

	// Reopened with a smaller limit, retention applies at once; offsets go on.
	l, err = Open(buffer.Options{Dir: dir, MaxBytes: maxBytes / 4})
	require.NoError(t, err)
	defer l.Close()
	require.Equal(t, next, l.NextOffset())
	require.Greater(t, l.FirstOffset(), first)
	require.LessOrEqual(t, l.BytesFrom(0), int64(maxBytes/8))
	recs = readAll(t, l, first)
	requireDense(t, recs, l.FirstOffset(), next)
	off, err := l.Append([]byte("after"))
	require.NoError(t, err)
	require.Equal(t, next, off)
}

// TestRetentionCrashBetweenSteps: retention excised the records but the
// deletion of their index marks was lost; Open drops the marks.
func TestRetentionCrashBetweenSteps(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, 64<<10)
	for i := range 200 {
		_, err := l.Append(payload(fmt.Sprint(i), 500))
		require.NoError(t, err)
	}
	first, next := l.FirstOffset(), l.NextOffset()
	require.Positive(t, first)
	// Simulate the lost step: excise more records, keep their marks.
	l.idxMu.RLock()
	cut := l.index[1].off
	l.idxMu.RUnlock()
	require.NoError(t, l.db.Excise(context.Background(), pebble.KeyRange{Start: recordKey(nil, 0), End: recordKey(nil, cut)}))
	require.NoError(t, l.Close())

	l = openT(t, dir, 64<<10)
	defer l.Close()
	require.Equal(t, cut, l.FirstOffset())
	require.Equal(t, next, l.NextOffset())
	requireDense(t, readAll(t, l, 0), cut, next)
	l.idxMu.RLock()
	require.Equal(t, cut, l.index[0].off)
	l.idxMu.RUnlock()
	require.NoError(t, l.Close())
	l = openT(t, dir, 64<<10) // the marks are gone for good
	require.Equal(t, cut, l.FirstOffset())
}

func TestBytesFrom(t *testing.T) {
	l := openT(t, t.TempDir(), 64<<10) // 1 KiB between index marks
	defer l.Close()
	require.Zero(t, l.BytesFrom(0))
	for i := range 40 {
		_, err := l.Append(make([]byte, 100), make([]byte, 100))
		require.NoError(t, err, i)
	}
	per := int64(100 + recordOverhead)
	next := l.NextOffset()
	require.Equal(t, int64(next)*per, l.BytesFrom(0))
	for _, off := range []uint64{1, 7, 30, 55, next - 1} {
		require.InDelta(t, float64(int64(next-off)*per), float64(l.BytesFrom(off)), float64(per), "from %d", off)
	}
	require.Zero(t, l.BytesFrom(next))
	require.Zero(t, l.BytesFrom(next+100))
}

// faultFS fails every WAL sync while on.
type faultFS struct{ on atomic.Bool }

func (f *faultFS) MaybeError(op errorfs.Op) error {
	if f.on.Load() && strings.HasSuffix(op.Path, ".log") {
		switch op.Kind {
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo, errorfs.OpFileWrite, errorfs.OpFileFlush:
			return errorfs.ErrInjected
		}
	}
	return nil
}

func (f *faultFS) String() string { return "faultFS" }

func TestFailedState(t *testing.T) {
	dir := t.TempDir()
	fault := &faultFS{}
	reg := buffer.NewMetrics(nil)
	l, err := open(buffer.Options{Dir: dir, Metrics: reg}, func(o *pebble.Options) {
		o.FS = errorfs.Wrap(vfs.Default, fault)
	})
	require.NoError(t, err)
	_, err = l.Append([]byte("a"), []byte("b"))
	require.NoError(t, err)
	require.NoError(t, l.CommitCursor("sink", 1))

	fault.on.Store(true)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Append([]byte("lost"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.ErrorIs(t, err, buffer.ErrFailed)
	}
	fault.on.Store(false) // the engine must not try again as if it had worked
	require.ErrorIs(t, l.Err(), errorfs.ErrInjected)
	var fe *fatalError
	require.ErrorAs(t, l.Err(), &fe, "Pebble's Fatalf was turned into the failed state")
	t.Logf("failed: %v", l.Err())
	require.Equal(t, uint64(2), l.DurableOffset(), "nothing of a failed commit is durable")
	_, err = l.Append([]byte("after"))
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.ErrorIs(t, l.CommitCursor("sink", 2), buffer.ErrFailed)
	require.ErrorIs(t, l.WaitDurable(context.Background(), 3), buffer.ErrFailed)
	require.Equal(t, 1.0, testutil.ToFloat64(reg.Failed))
	recs := readAll(t, l, 0)
	requireDense(t, recs, 0, 2)
	require.NoError(t, l.Close())

	l = openT(t, dir, 0)
	defer l.Close()
	require.NoError(t, l.Err())
	next := l.NextOffset()
	require.GreaterOrEqual(t, next, uint64(2), "acknowledged records survive")
	recs = readAll(t, l, 0)
	requireDense(t, recs, 0, next)
	require.Equal(t, "a", string(recs[0].payload))
	require.Equal(t, "b", string(recs[1].payload))
	c, _ := l.Cursor("sink")
	require.Equal(t, uint64(1), c)
	off, err := l.Append([]byte("again"))
	require.NoError(t, err)
	require.Equal(t, next, off)
}

func TestOpenRefusesForeignStore(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir+"/pebble", &pebble.Options{Logger: pebbleLogger{l: &Log{log: discard()}}})
	require.NoError(t, err)
	require.NoError(t, db.Set([]byte("hello"), []byte("world"), pebble.Sync))
	require.NoError(t, db.Close())
	_, err = Open(buffer.Options{Dir: dir})
	require.ErrorContains(t, err, "not a holdfast buffer")
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// lowSpaceFS reports avail bytes free once avail is set.
type lowSpaceFS struct {
	vfs.FS
	avail atomic.Int64
}

func (f *lowSpaceFS) GetDiskUsage(path string) (vfs.DiskUsage, error) {
	du, err := f.FS.GetDiskUsage(path)
	if a := f.avail.Load(); a > 0 {
		du.AvailBytes = uint64(a)
	}
	return du, err
}

// TestReserve: an append that would eat into the reserve Pebble needs fails the
// engine with ENOSPC before anything is written.
func TestReserve(t *testing.T) {
	dir := t.TempDir()
	fs := &lowSpaceFS{FS: vfs.Default}
	l, err := open(buffer.Options{Dir: dir}, func(o *pebble.Options) { o.FS = fs })
	require.NoError(t, err)
	_, err = l.Append([]byte("fits"))
	require.NoError(t, err)
	fs.avail.Store(int64(l.reserve) + 100)
	_, err = l.Append(make([]byte, 50))
	require.NoError(t, err, "leaves the reserve free")
	_, err = l.Append(make([]byte, 100))
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.ErrorIs(t, l.Err(), syscall.ENOSPC)
	fs.avail.Store(0)
	_, err = l.Append([]byte("later"))
	require.ErrorIs(t, err, buffer.ErrFailed, "failed until opened again")
	require.Equal(t, uint64(2), l.DurableOffset())
	require.NoError(t, l.Close())

	l = openT(t, dir, 0)
	defer l.Close()
	require.Equal(t, uint64(2), l.NextOffset(), "the refused group was never written")
	off, err := l.Append([]byte("again"))
	require.NoError(t, err)
	require.Equal(t, uint64(2), off)
}

// TestRetentionReportsUnreadRecords: see enginetest.UnreadDeleted.
func TestRetentionReportsUnreadRecords(t *testing.T) {
	enginetest.UnreadDeleted(t, buffer.Options{}, func(o buffer.Options) (buffer.Engine, error) { return Open(o) })
}

// TestRetentionWaitsForRemove: see enginetest.RetentionWaitsForRemove.
func TestRetentionWaitsForRemove(t *testing.T) {
	enginetest.RetentionWaitsForRemove(t, buffer.Options{}, func(o buffer.Options) (buffer.Engine, error) { return Open(o) })
}

// TestRetentionHookBeforeDeletion: see enginetest.UnreadDeletedBeforeDurable.
func TestRetentionHookBeforeDeletion(t *testing.T) {
	enginetest.UnreadDeletedBeforeDurable(t, buffer.Options{}, func(o buffer.Options) (buffer.Engine, error) { return Open(o) })
}
