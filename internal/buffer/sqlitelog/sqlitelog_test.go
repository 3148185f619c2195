package sqlitelog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/enginetest"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

func open(t testing.TB, dir string, maxBytes int64) *Log {
	t.Helper()
	l, err := Open(buffer.Options{Dir: dir, MaxBytes: maxBytes})
	require.NoError(t, err)
	return l
}

func payload(i int) []byte { return fmt.Appendf(nil, "record-%06d", i) }

// readAll reads every record from `from` to the durable end.
func readAll(t testing.TB, e buffer.Engine, from uint64) (offs []uint64, payloads []string) {
	t.Helper()
	r := e.NewReader(from)
	defer r.Close()
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return offs, payloads
		}
		require.NoError(t, err)
		offs = append(offs, off)
		payloads = append(payloads, string(p))
	}
}

func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	require.Equal(t, uint64(0), l.NextOffset())
	require.Equal(t, uint64(0), l.FirstOffset())
	for i := range 1000 {
		off, err := l.Append(payload(i))
		require.NoError(t, err)
		require.Equal(t, uint64(i), off)
	}
	batch := make([][]byte, 100) // more than insertRows, not a multiple
	for i := range batch {
		batch[i] = payload(1000 + i)
	}
	first, err := l.Append(batch...)
	require.NoError(t, err)
	require.Equal(t, uint64(1000), first)
	require.Equal(t, uint64(1100), l.DurableOffset())
	s := l.Stats()
	require.Equal(t, uint64(0), s.FirstOffset)
	require.Equal(t, uint64(1100), s.NextOffset)
	require.Positive(t, s.Bytes)
	require.NoError(t, l.Close())

	l = open(t, dir, 0)
	defer l.Close()
	require.Equal(t, uint64(1100), l.NextOffset())
	require.Equal(t, uint64(1100), l.DurableOffset())
	offs, ps := readAll(t, l, 0)
	require.Len(t, offs, 1100)
	for i, off := range offs {
		require.Equal(t, uint64(i), off)
		require.Equal(t, string(payload(i)), ps[i])
	}
	offs, _ = readAll(t, l, 777)
	require.Equal(t, uint64(777), offs[0])
	require.Len(t, offs, 1100-777)
	off, err := l.Append(payload(1100))
	require.NoError(t, err)
	require.Equal(t, uint64(1100), off)
}

// Concurrent appenders get dense, distinct offsets, consecutive within a call,
// and each offset holds what its appender wrote.
func TestConcurrentAppends(t *testing.T) {
	l := open(t, t.TempDir(), 0)
	defer l.Close()
	const workers, calls = 64, 50
	var mu sync.Mutex
	want := map[uint64]string{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for c := range calls {
				n := 1 + (w+c)%3
				batch := make([][]byte, n)
				for i := range batch {
					batch[i] = fmt.Appendf(nil, "w%d-c%d-%d", w, c, i)
				}
				first, err := l.Append(batch...)
				if !assertNoError(t, err) {
					return
				}
				mu.Lock()
				for i, p := range batch {
					_, dup := want[first+uint64(i)]
					if dup {
						t.Errorf("offset %d handed out twice", first+uint64(i))
					}
					want[first+uint64(i)] = string(p)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	offs, ps := readAll(t, l, 0)
	require.Len(t, offs, len(want))
	require.Equal(t, uint64(len(want)), l.DurableOffset())
	for i, off := range offs {
		require.Equal(t, uint64(i), off, "no gaps")
		require.Equal(t, want[off], ps[i])
	}
}

func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

func TestReaderFollowsAppends(t *testing.T) {
	l := open(t, t.TempDir(), 0)
	defer l.Close()
	r := l.NewReader(0)
	defer r.Close()
	_, _, err := r.Next()
	require.ErrorIs(t, err, io.EOF)
	_, err = l.Append(payload(0))
	require.NoError(t, err)
	off, p, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, uint64(0), off)
	require.Equal(t, string(payload(0)), string(p))
	_, _, err = r.Next()
	require.ErrorIs(t, err, io.EOF)
	require.Equal(t, uint64(1), r.Position())

	// A follower sees every record in order while appenders run; more than
	// one read chunk.
	const total = 3 * readRows
	done := make(chan error, 1)
	go func() {
		next := uint64(1)
		for next <= total {
			off, p, err := r.Next()
			if errors.Is(err, io.EOF) {
				if err := l.WaitDurable(context.Background(), next+1); err != nil {
					done <- err
					return
				}
				continue
			}
			if err != nil {
				done <- err
				return
			}
			if off != next || string(p) != string(payload(int(off))) {
				done <- fmt.Errorf("got %d %q, want %d", off, p, next)
				return
			}
			if off > l.DurableOffset() {
				done <- fmt.Errorf("read %d beyond the durable offset", off)
				return
			}
			next++
		}
		done <- nil
	}()
	for i := 1; i <= total; i += 10 {
		batch := make([][]byte, 10)
		for j := range batch {
			batch[j] = payload(i + j)
		}
		_, err := l.Append(batch...)
		require.NoError(t, err)
	}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("follower stuck")
	}
}

func TestWaitDurable(t *testing.T) {
	l := open(t, t.TempDir(), 0)
	require.NoError(t, l.WaitDurable(context.Background(), 0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, l.WaitDurable(ctx, 1), context.DeadlineExceeded)

	waited := make(chan error, 1)
	go func() { waited <- l.WaitDurable(context.Background(), 3) }()
	_, err := l.Append(payload(0), payload(1), payload(2))
	require.NoError(t, err)
	require.NoError(t, <-waited)

	go func() { waited <- l.WaitDurable(context.Background(), 100) }()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, l.Close())
	require.ErrorIs(t, <-waited, buffer.ErrClosed)
}

func TestCursors(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	_, ok := l.Cursor("a")
	require.False(t, ok)
	require.NoError(t, l.CommitCursors(map[string]uint64{"a": 5, "b": 7}))
	require.NoError(t, l.CommitCursor("a", 3), "backwards is ignored")
	require.NoError(t, l.CommitCursor("c", 1<<63+5), "any u64 survives")
	off, ok := l.Cursor("a")
	require.True(t, ok)
	require.Equal(t, uint64(5), off)
	c := l.Cursors()
	require.Equal(t, map[string]uint64{"a": 5, "b": 7, "c": 1<<63 + 5}, c)
	c["a"] = 99
	off, _ = l.Cursor("a")
	require.Equal(t, uint64(5), off, "Cursors returns a copy")
	require.Error(t, l.CommitCursor("", 1))
	require.Error(t, l.CommitCursor(string(make([]byte, 256)), 1))

	// Cursors and appends committed concurrently.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, err := l.Append(payload(i))
			assertNoError(t, err)
			assertNoError(t, l.CommitCursors(map[string]uint64{"a": uint64(10 + i), "b": uint64(10 + i)}))
		})
	}
	wg.Wait()
	require.NoError(t, l.Close())
	require.ErrorIs(t, l.CommitCursor("a", 100), buffer.ErrClosed)

	l = open(t, dir, 0)
	defer l.Close()
	require.Equal(t, map[string]uint64{"a": 29, "b": 29, "c": 1<<63 + 5}, l.Cursors())
}

// A commit that fails after its cursor rows were written leaves none of them,
// nor its records: one transaction.
func TestCommitAtomic(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	_, err := l.Append(payload(0))
	require.NoError(t, err)
	require.NoError(t, l.CommitCursors(map[string]uint64{"a": 1, "b": 1}))
	l.beforeCommit = func() error { return errors.New("injected") }
	require.ErrorIs(t, l.CommitCursors(map[string]uint64{"a": 2, "b": 2}), buffer.ErrFailed)
	_, err = l.Append(payload(1))
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.NoError(t, l.Close())

	l = open(t, dir, 0)
	defer l.Close()
	require.Equal(t, map[string]uint64{"a": 1, "b": 1}, l.Cursors())
	require.Equal(t, uint64(1), l.NextOffset())
}

func TestTooLargeAndClosed(t *testing.T) {
	l := open(t, t.TempDir(), 0)
	_, err := l.Append([]byte{})
	require.ErrorIs(t, err, buffer.ErrTooLarge)
	_, err = l.Append(payload(0), make([]byte, buffer.MaxRecordSize+1))
	require.ErrorIs(t, err, buffer.ErrTooLarge)
	off, err := l.Append()
	require.NoError(t, err, "no payloads: nothing to wait for")
	require.Equal(t, uint64(0), off)
	big := make([]byte, buffer.MaxRecordSize)
	big[len(big)-1] = 7
	off, err = l.Append(big)
	require.NoError(t, err)
	require.Equal(t, uint64(0), off, "nothing of a refused call was stored")
	offs, ps := readAll(t, l, 0)
	require.Equal(t, []uint64{0}, offs)
	require.Equal(t, string(big), ps[0])

	r := l.NewReader(0)
	require.NoError(t, l.Close())
	_, err = l.Append(payload(1))
	require.ErrorIs(t, err, buffer.ErrClosed)
	require.ErrorIs(t, l.Close(), buffer.ErrClosed)
	_, _, err = r.Next()
	require.ErrorIs(t, err, buffer.ErrClosed)
	require.NoError(t, r.Close())
}

func TestRetention(t *testing.T) {
	dir := t.TempDir()
	const maxBytes = 256 << 10
	m := buffer.NewMetrics(nil)
	l, err := Open(buffer.Options{Dir: dir, MaxBytes: maxBytes, Metrics: m})
	require.NoError(t, err)
	rec := make([]byte, 1000)
	const n = 3000 // ~12× maxBytes
	var firstAtCursor uint64
	for i := 0; i < n; i += 10 {
		batch := make([][]byte, 10)
		for j := range batch {
			batch[j] = fmt.Appendf(rec[:0:0], "%06d%0994d", i+j, 0)
		}
		_, err := l.Append(batch...)
		require.NoError(t, err)
		if i == n/2 {
			require.NoError(t, l.CommitCursor("slow", 100))
			firstAtCursor = l.FirstOffset()
		}
	}
	first := l.FirstOffset()
	require.Positive(t, first)
	stored := l.BytesFrom(0)
	require.LessOrEqual(t, stored, int64(maxBytes))
	require.Greater(t, stored, int64(maxBytes)*9/10)
	require.Equal(t, int64(n-first)*(1000+rowOverhead), stored)
	require.Equal(t, float64(first), testutil.ToFloat64(m.RetentionRecords))
	unread := testutil.ToFloat64(m.RetentionUnread)
	require.Equal(t, float64(first-firstAtCursor), unread, "records deleted at or above the cursor")

	offs, ps := readAll(t, l, 0)
	require.Equal(t, first, offs[0], "reading starts at the oldest record held")
	require.Len(t, offs, int(n-first))
	require.Equal(t, fmt.Sprintf("%06d", n-1), ps[len(ps)-1][:6])

	fi, err := os.Stat(filepath.Join(dir, DBFile))
	require.NoError(t, err)
	require.Less(t, fi.Size(), int64(3*maxBytes), "freed pages are reused")
	require.NoError(t, l.Close())

	l = open(t, dir, maxBytes)
	defer l.Close()
	require.Equal(t, first, l.FirstOffset())
	require.Equal(t, uint64(n), l.NextOffset())
	require.Equal(t, stored, l.BytesFrom(0))
}

// Offsets survive retention deleting everything but the newest group, and a
// restart with a much smaller max_bytes.
func TestRetentionKeepsOffsets(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	for i := range 100 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	l = open(t, dir, 10)
	off, err := l.Append(payload(100))
	require.NoError(t, err)
	require.Equal(t, uint64(100), off)
	require.Equal(t, uint64(100), l.FirstOffset(), "everything older deleted")
	off, err = l.Append(payload(101))
	require.NoError(t, err)
	require.Equal(t, uint64(101), l.FirstOffset())
	require.NoError(t, l.Close())
	l = open(t, dir, 10)
	defer l.Close()
	require.Equal(t, uint64(102), l.NextOffset())
	offs, _ := readAll(t, l, 0)
	require.Equal(t, []uint64{101}, offs)
}

func TestBytesFrom(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	rec := make([]byte, 100)
	for i := 0; i < 5000; i += 50 {
		batch := make([][]byte, 50)
		for j := range batch {
			batch[j] = rec
		}
		_, err := l.Append(batch...)
		require.NoError(t, err)
	}
	per := int64(100 + rowOverhead)
	check := func(l *Log) {
		t.Helper()
		require.Equal(t, 5000*per, l.BytesFrom(0))
		require.Equal(t, int64(0), l.BytesFrom(5000))
		require.Equal(t, int64(0), l.BytesFrom(6000))
		for _, off := range []uint64{1, 17, 2500, 4999} {
			require.InDelta(t, float64(int64(5000-off)*per), float64(l.BytesFrom(off)), float64(per))
		}
	}
	check(l)
	require.NoError(t, l.Close())
	l = open(t, dir, 0) // no marks: interpolated
	defer l.Close()
	check(l)
}

// Failed state on a real SQLITE_FULL: the database may not grow.
func TestFailedState(t *testing.T) {
	dir := t.TempDir()
	m := buffer.NewMetrics(nil)
	l, err := Open(buffer.Options{Dir: dir, Metrics: m})
	require.NoError(t, err)
	for i := range 10 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
	}
	// The committer is idle: limit the database to its current pages.
	var pages int64
	require.NoError(t, l.wconn.QueryRowContext(context.Background(), "PRAGMA page_count").Scan(&pages))
	_, err = l.wconn.ExecContext(context.Background(), fmt.Sprintf("PRAGMA max_page_count = %d", pages))
	require.NoError(t, err)

	_, err = l.Append(make([]byte, 64<<10))
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.ErrorContains(t, l.Err(), "full")
	require.Equal(t, 1.0, testutil.ToFloat64(m.Failed))
	require.Equal(t, uint64(10), l.DurableOffset())
	_, err = l.Append(payload(11))
	require.ErrorIs(t, err, buffer.ErrFailed, "nothing more is acknowledged")
	require.ErrorIs(t, l.CommitCursor("a", 1), buffer.ErrFailed)
	require.ErrorIs(t, l.WaitDurable(context.Background(), 11), buffer.ErrFailed)
	offs, _ := readAll(t, l, 0)
	require.Len(t, offs, 10, "readers see only committed records")
	require.NoError(t, l.Close())

	l = open(t, dir, 0)
	defer l.Close()
	require.NoError(t, l.Err())
	offs, _ = readAll(t, l, 0)
	require.Len(t, offs, 10)
	off, err := l.Append(payload(10))
	require.NoError(t, err)
	require.Equal(t, uint64(10), off)
}

// Failed state on ENOSPC from a small tmpfs (needs root; skipped otherwise,
// unless HOLDFAST_REQUIRE_TMPFS=1 makes that a failure).
func TestFailedStateENOSPC(t *testing.T) {
	dir := mountTmpfs(t, "512k")
	l := open(t, dir, 0)
	var acked uint64
	var err error
	rec := make([]byte, 4<<10)
	for i := 0; i < 1000; i++ {
		if _, err = l.Append(rec); err != nil {
			break
		}
		acked++
	}
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.Error(t, l.Err())
	t.Logf("acked %d records, then: %v", acked, l.Err())
	_, err = l.Append(payload(0))
	require.ErrorIs(t, err, buffer.ErrFailed)
	require.Equal(t, acked, l.DurableOffset())
	_ = l.Close() // may fail: the checkpoint on close needs space too

	l2, err := Open(buffer.Options{Dir: dir})
	if err != nil {
		t.Logf("reopen on the full file system: %v", err)
		return
	}
	defer l2.Close()
	offs, _ := readAll(t, l2, 0)
	require.GreaterOrEqual(t, uint64(len(offs)), acked, "every acknowledged record survives")
}

func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := runCmd("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir); err != nil {
		if os.Getenv("HOLDFAST_REQUIRE_TMPFS") == "1" {
			t.Fatalf("cannot mount tmpfs (and HOLDFAST_REQUIRE_TMPFS=1 requires it): %v %s", err, out)
		}
		t.Skipf("cannot mount tmpfs: %v %s; set HOLDFAST_REQUIRE_TMPFS=1 to make this a failure", err, out)
	}
	t.Cleanup(func() {
		if out, err := runCmd("umount", dir); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return filepath.Join(dir, "buf")
}

func TestCorruptPayload(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, 0)
	defer l.Close()
	for i := range 10 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, DBFile)+"?_pragma=busy_timeout(5000)")
	require.NoError(t, err)
	_, err = db.Exec("UPDATE records SET payload = X'00' || substr(payload, 2) WHERE off = 5")
	require.NoError(t, err)
	require.NoError(t, db.Close())

	r := l.NewReader(3)
	defer r.Close()
	for range 2 {
		_, _, err = r.Next()
		require.NoError(t, err)
	}
	for range 2 {
		_, _, err = r.Next()
		var ce *CorruptionError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, uint64(5), ce.Offset)
		require.Equal(t, uint64(5), r.Position(), "the reader does not skip it")
	}
}

func TestNotABuffer(t *testing.T) {
	dir := t.TempDir()
	db, err := sql.Open("sqlite", filepath.Join(dir, DBFile))
	require.NoError(t, err)
	_, err = db.Exec("CREATE TABLE other (x)")
	require.NoError(t, err)
	require.NoError(t, db.Close())
	_, err = Open(buffer.Options{Dir: dir})
	require.ErrorContains(t, err, "not a holdfast buffer")

	require.NoError(t, os.WriteFile(filepath.Join(dir, DBFile), []byte("definitely not sqlite, long enough to have a header ........................................................"), 0o600))
	_, err = Open(buffer.Options{Dir: dir})
	require.Error(t, err)

	_, err = Open(buffer.Options{})
	require.Error(t, err)
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
