package buffer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const dir = "/data/log"

func openMem(t *testing.T, fs *vfs.MemFS, segBytes int64) *Log {
	t.Helper()
	l, err := Open(Options{Dir: dir, FS: fs, SegmentBytes: segBytes, MaxBytes: 1 << 30})
	require.NoError(t, err)
	return l
}

func payload(i int) []byte { return fmt.Appendf(nil, "record-%06d", i) }

// readAll reads every record from `from` to the durable end.
func readAll(t *testing.T, l *Log, from uint64) (offs []uint64, payloads []string) {
	t.Helper()
	r := l.NewReader(from)
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
	fs := vfs.NewMem()
	l := openMem(t, fs, 4096)
	for i := range 1000 {
		off, err := l.Append(payload(i))
		require.NoError(t, err)
		require.Equal(t, uint64(i), off)
	}
	first, err := l.Append(payload(1000), payload(1001), payload(1002))
	require.NoError(t, err)
	require.Equal(t, uint64(1000), first)
	require.Greater(t, l.Stats().Segments, 5, "segments roll at SegmentBytes")
	require.NoError(t, l.Close())

	l = openMem(t, fs, 4096)
	defer l.Close()
	require.Equal(t, uint64(1003), l.NextOffset())
	offs, ps := readAll(t, l, 0)
	require.Len(t, offs, 1003)
	for i, off := range offs {
		require.Equal(t, uint64(i), off)
		require.Equal(t, string(payload(i)), ps[i])
	}
	// Reading from the middle of a segment starts exactly there.
	offs, _ = readAll(t, l, 777)
	require.Equal(t, uint64(777), offs[0])
	require.Len(t, offs, 1003-777)
}

func TestReaderFollowsAppends(t *testing.T) {
	l := openMem(t, vfs.NewMem(), 4096)
	defer l.Close()
	r := l.NewReader(0)
	defer r.Close()
	_, _, err := r.Next()
	require.ErrorIs(t, err, io.EOF)
	for i := range 500 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
		off, p, err := r.Next()
		require.NoError(t, err)
		require.Equal(t, uint64(i), off)
		require.Equal(t, string(payload(i)), string(p))
	}
}

func TestConcurrentAppendsShareCommits(t *testing.T) {
	m := NewMetrics(nil)
	l, err := Open(Options{Dir: t.TempDir(), Metrics: m})
	require.NoError(t, err)
	const writers, each = 32, 200
	var wg sync.WaitGroup
	seen := make([][]uint64, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				off, err := l.Append(payload(w*each + i))
				if err != nil {
					t.Error(err)
					return
				}
				seen[w] = append(seen[w], off)
			}
		}()
	}
	wg.Wait()
	offs, ps := readAll(t, l, 0)
	require.Len(t, offs, writers*each)
	got := map[string]bool{}
	for _, p := range ps {
		got[p] = true
	}
	require.Len(t, got, writers*each, "every record present once")
	// Group commit: fewer fsyncs than appends.
	var h dto.Metric
	require.NoError(t, m.FsyncSeconds.Write(&h))
	require.Less(t, h.GetHistogram().GetSampleCount(), uint64(writers*each/2))
	require.NoError(t, l.Close())
}

func TestCrashKeepsOnlySynced(t *testing.T) {
	fs := vfs.NewMem()
	l := openMem(t, fs, 8192)
	for i := range 300 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
	}
	// Bytes written but never synced: simulate by writing to the active segment
	// directly, as a crash between write and fsync would leave them.
	segs, _ := fs.List(dir)
	var active string
	for _, s := range segs {
		if filepath.Ext(s) == ".seg" {
			active = filepath.Join(dir, s)
		}
	}
	f, err := fs.OpenRW(active)
	require.NoError(t, err)
	_, err = f.Write(appendFrame(nil, 300, payload(300))[:20]) // torn frame
	require.NoError(t, err)
	fs.Crash(func(_ string, unsynced []byte) []byte { return unsynced })
	_ = l.Close() // stops the crashed log's writer; its handles are dead
	m := NewMetrics(nil)
	l, err = Open(Options{Dir: dir, FS: fs, SegmentBytes: 8192, Metrics: m})
	require.NoError(t, err)
	defer l.Close()
	require.Equal(t, uint64(300), l.NextOffset())
	require.Equal(t, 20.0, testutil.ToFloat64(m.TornBytes))
	require.Equal(t, 0.0, testutil.ToFloat64(m.CorruptRecords))
	offs, _ := readAll(t, l, 0)
	require.Len(t, offs, 300)
	// Appending continues right after the truncated tail.
	off, err := l.Append(payload(300))
	require.NoError(t, err)
	require.Equal(t, uint64(300), off)
}

func TestRandomCrashes(t *testing.T) {
	fs := vfs.NewMem()
	rng := rand.New(rand.NewPCG(1, 2))
	acked := map[string]bool{}
	next := 0
	for round := range 30 {
		l, err := Open(Options{Dir: dir, FS: fs, SegmentBytes: 4096 + int64(rng.IntN(8192)), MaxBytes: 1 << 30})
		require.NoError(t, err, "round %d", round)
		// Everything acknowledged so far is there exactly once.
		_, ps := readAll(t, l, 0)
		count := map[string]int{}
		for _, p := range ps {
			count[p]++
		}
		for p := range acked {
			require.Equal(t, 1, count[p], "round %d: acked record %s", round, p)
		}
		// Concurrent appends, then a crash at a random moment: some groups are
		// written but not synced when it hits.
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					mu.Lock()
					p := payload(next)
					next++
					mu.Unlock()
					if _, err := l.Append(p); err != nil {
						return
					}
					mu.Lock()
					acked[string(p)] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		fs.Crash(func(_ string, unsynced []byte) []byte {
			keep := unsynced[:rng.IntN(len(unsynced)+1)]
			if len(keep) > 0 && rng.IntN(2) == 0 {
				keep[rng.IntN(len(keep))] ^= 0xff // a torn page with garbage
			}
			return keep
		})
		// The crashed log's writer is still running against dead handles; Close
		// makes it exit.
		_ = l.Close()
	}
}

// damageModes are the two ways damage in a sealed segment is found: at open,
// when the segment has no seal and is scanned (a data directory from before
// seals, or a seal that could not be written); and on its first read, when
// it was opened on its seal.
var damageModes = []struct {
	name   string
	noSeal bool
}{{"scanned at open", true}, {"opened on its seal", false}}

func TestBitFlipInSealedSegmentIsQuarantined(t *testing.T) {
	for _, mode := range damageModes {
		t.Run(mode.name, func(t *testing.T) {
			fs := vfs.NewMem()
			l := openMem(t, fs, 4096)
			for i := range 600 {
				_, err := l.Append(payload(i))
				require.NoError(t, err)
			}
			require.NoError(t, l.Close())
			seg := filepath.Join(dir, segmentName(0))
			data, ok := fs.Bytes(seg)
			require.True(t, ok)
			pos := segmentHeaderSize + 5*(frameHeaderSize+len(payload(0))) + frameHeaderSize + 3 // inside record 5's payload
			data[pos] ^= 0x01
			fs.SetBytes(seg, data)
			if mode.noSeal {
				require.NoError(t, fs.Remove(filepath.Join(dir, sealName(0))))
			}

			m := NewMetrics(nil)
			l, err := Open(Options{Dir: dir, FS: fs, SegmentBytes: 4096, Metrics: m})
			require.NoError(t, err)
			defer l.Close()
			if mode.noSeal {
				require.Equal(t, 1.0, testutil.ToFloat64(m.CorruptRecords), "found at open")
			} else {
				require.Equal(t, 0.0, testutil.ToFloat64(m.CorruptRecords), "the segment is not read at open")
			}
			offs, _ := readAll(t, l, 0)
			require.Equal(t, 1.0, testutil.ToFloat64(m.CorruptRecords), "exactly the damaged record is counted")
			require.Equal(t, int64(1), l.Stats().QuarantinedRecords)
			require.Len(t, offs, 599)
			require.NotContains(t, offs, uint64(5))
			require.Contains(t, offs, uint64(6), "records after the damage are kept")
			q, err := fs.List(filepath.Join(dir, quarantineDir))
			require.NoError(t, err)
			require.Len(t, q, 1, "the damaged bytes are copied aside")
			_, sealed := fs.Bytes(filepath.Join(dir, sealName(0)))
			require.False(t, sealed, "a damaged segment has no seal: the next open scans it")
			offs, _ = readAll(t, l, 0)
			require.Len(t, offs, 599, "read again, the damage is passed over")
			require.Equal(t, 1.0, testutil.ToFloat64(m.CorruptRecords), "and not counted again")
		})
	}
}

func TestDamagedSealedTailCountsGap(t *testing.T) {
	for _, mode := range damageModes {
		t.Run(mode.name, func(t *testing.T) {
			fs := vfs.NewMem()
			l := openMem(t, fs, 4096)
			for i := range 600 {
				_, err := l.Append(payload(i))
				require.NoError(t, err)
			}
			require.NoError(t, l.Close())
			seg := filepath.Join(dir, segmentName(0))
			data, _ := fs.Bytes(seg)
			n := (len(data) - segmentHeaderSize) / (frameHeaderSize + len(payload(0)))
			// Zero the last two frames of the sealed segment.
			cut := len(data) - 2*(frameHeaderSize+len(payload(0)))
			clear(data[cut:])
			fs.SetBytes(seg, data)
			if mode.noSeal {
				require.NoError(t, fs.Remove(filepath.Join(dir, sealName(0))))
			}
			m := NewMetrics(nil)
			l, err := Open(Options{Dir: dir, FS: fs, SegmentBytes: 4096, Metrics: m})
			require.NoError(t, err)
			defer l.Close()
			offs, _ := readAll(t, l, 0)
			require.Equal(t, 2.0, testutil.ToFloat64(m.CorruptRecords))
			require.Len(t, offs, 598)
			require.Equal(t, uint64(n-3), offs[n-3])
			require.Equal(t, uint64(n), offs[n-2], "reading continues in the next segment")
		})
	}
}

func TestFsyncFailureStopsAcks(t *testing.T) {
	fs := vfs.NewMem()
	m := NewMetrics(nil)
	l, err := Open(Options{Dir: dir, FS: fs, Metrics: m})
	require.NoError(t, err)
	_, err = l.Append(payload(0))
	require.NoError(t, err)
	fs.Inject(func(op vfs.Op, _ string) error {
		if op == vfs.OpSync {
			return syscall.EIO
		}
		return nil
	})
	_, err = l.Append(payload(1))
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorIs(t, l.Err(), syscall.EIO)
	fs.Inject(nil)
	_, err = l.Append(payload(2))
	require.ErrorIs(t, err, ErrFailed, "a failed log stays failed even once the disk recovers")
	require.Equal(t, 1.0, testutil.ToFloat64(m.Failed))
	require.Equal(t, uint64(1), l.DurableOffset())
	require.NoError(t, l.Close())
}

func TestENOSPCOnWrite(t *testing.T) {
	fs := vfs.NewMem()
	l := openMem(t, fs, 4096)
	fs.Inject(func(op vfs.Op, _ string) error {
		if op == vfs.OpWrite {
			return syscall.ENOSPC
		}
		return nil
	})
	_, err := l.Append(payload(0))
	require.ErrorIs(t, err, ErrFailed)
	require.ErrorIs(t, l.Err(), syscall.ENOSPC)
	require.NoError(t, l.Close())
	fs.Inject(nil)
	l = openMem(t, fs, 4096)
	defer l.Close()
	off, err := l.Append(payload(0))
	require.NoError(t, err, "reopening after the disk has room works")
	require.Equal(t, uint64(0), off)
}

func TestCursorsPersist(t *testing.T) {
	fs := vfs.NewMem()
	l := openMem(t, fs, 4096)
	require.NoError(t, l.CommitCursor("cloud", 42))
	require.NoError(t, l.CommitCursor("cloud", 10), "moving back is ignored")
	require.NoError(t, l.CommitCursor("http", 7))
	require.NoError(t, l.Close())
	fs.Crash(nil)
	l = openMem(t, fs, 4096)
	c, ok := l.Cursor("cloud")
	require.True(t, ok)
	require.Equal(t, uint64(42), c)
	c, _ = l.Cursor("http")
	require.Equal(t, uint64(7), c)
	require.NoError(t, l.Close())

	data, _ := fs.Bytes(filepath.Join(dir, cursorsFile))
	data[6] ^= 1
	fs.SetBytes(filepath.Join(dir, cursorsFile), data)
	_, err := Open(Options{Dir: dir, FS: fs})
	require.ErrorContains(t, err, "checksum mismatch", "a damaged cursors file is an error, not a reset")
}

func TestRetentionBySize(t *testing.T) {
	fs := vfs.NewMem()
	m := NewMetrics(nil)
	l, err := Open(Options{Dir: dir, FS: fs, SegmentBytes: 4096, MaxBytes: 16384, Metrics: m})
	require.NoError(t, err)
	defer l.Close()
	require.NoError(t, l.CommitCursor("sink", 100))
	for i := range 2000 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
	}
	s := l.Stats()
	require.LessOrEqual(t, s.Bytes, int64(16384+4096))
	require.Greater(t, s.FirstOffset, uint64(0))
	deleted := testutil.ToFloat64(m.RetentionRecords)
	require.Equal(t, float64(s.FirstOffset), deleted)
	require.Equal(t, deleted-100, testutil.ToFloat64(m.RetentionUnread))
	offs, _ := readAll(t, l, 0)
	require.Equal(t, s.FirstOffset, offs[0], "reading from 0 starts at the oldest record held")
	require.Equal(t, uint64(1999), offs[len(offs)-1])
}

func TestAppendRejectsBadSizes(t *testing.T) {
	l := openMem(t, vfs.NewMem(), 4096)
	defer l.Close()
	_, err := l.Append([]byte{})
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = l.Append(make([]byte, MaxRecordSize+1))
	require.ErrorIs(t, err, ErrTooLarge)
}

// TestBytesFrom: the estimate of the log's bytes after an offset is exact at
// the ends and at segment boundaries, and close in between.
func TestBytesFrom(t *testing.T) {
	l, err := Open(Options{Dir: t.TempDir(), SegmentBytes: 64 << 10})
	require.NoError(t, err)
	defer l.Close()
	const n, size = 5000, 84 // 84-byte payload + 16-byte frame header = 100 bytes a record
	for i := 0; i < n; i += 100 {
		ps := make([][]byte, 100)
		for j := range ps {
			ps[j] = make([]byte, size)
		}
		_, err := l.Append(ps...)
		require.NoError(t, err)
	}
	st := l.Stats()
	require.Greater(t, st.Segments, 3)
	require.Equal(t, st.Bytes, l.BytesFrom(0))
	require.Zero(t, l.BytesFrom(n))
	for _, off := range []uint64{1, 777, 2500, 4999} {
		want := int64(n-off) * 100
		require.InDelta(t, want, l.BytesFrom(off), 100*16/2+1, "offset %d", off) // within segment headers' worth
	}
}

// TestWaitDurableEndsOnClose: a caller waiting for an offset that will never
// be written gets ErrClosed when the log closes, instead of waiting forever.
func TestWaitDurableEndsOnClose(t *testing.T) {
	l, err := Open(Options{Dir: t.TempDir()})
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- l.WaitDurable(context.Background(), 10) }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, l.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("WaitDurable still waiting after Close")
	}
}

// TestDeleteBefore: whole sealed segments below the offset go, the active one
// and anything at or above the offset stay, offsets are not reused.
func TestDeleteBefore(t *testing.T) {
	l, err := Open(Options{Dir: t.TempDir(), SegmentBytes: 4096})
	require.NoError(t, err)
	defer l.Close()
	for i := range 500 {
		_, err := l.Append([]byte(fmt.Sprintf("r%03d-%s", i, strings.Repeat("x", 40))))
		require.NoError(t, err)
	}
	before := l.Stats()
	n, err := l.DeleteBefore(250)
	require.NoError(t, err)
	require.Positive(t, n)
	first := l.FirstOffset()
	require.Equal(t, n, first, "deleted exactly the records below the new first offset")
	require.LessOrEqual(t, first, uint64(250))
	require.Less(t, l.Stats().Bytes, before.Bytes)
	r := l.NewReader(0)
	defer r.Close()
	off, p, err := r.Next()
	require.NoError(t, err)
	require.Equal(t, first, off)
	require.Equal(t, fmt.Sprintf("r%03d-", first), string(p[:5]))
	n, err = l.DeleteBefore(1 << 40)
	require.NoError(t, err)
	require.Positive(t, n)
	require.Equal(t, 1, l.Stats().Segments, "the active segment stays")
	next, err := l.Append([]byte("after"))
	require.NoError(t, err)
	require.Equal(t, uint64(500), next)
}

// TestSealsOpenLikeAScan: a log opened on its seals serves the same records,
// positions and sizes as one opened by scanning every segment; a seal that
// does not match its segment is not used, and the segment's seal is written
// again after the scan.
func TestSealsOpenLikeAScan(t *testing.T) {
	fs := vfs.NewMem()
	l := openMem(t, fs, 4096)
	for i := range 2000 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
	}
	// Compact one sealed segment: its seal is written again with the flag.
	removed, err := l.Remove([]uint64{3, 4, 500}, func(h []uint64) []uint64 { return h })
	require.NoError(t, err)
	require.Equal(t, []uint64{3, 4, 500}, removed)
	require.NoError(t, l.Close())

	type view struct {
		offs  []uint64
		ps    []string
		stats Stats
		bytes []int64
	}
	look := func(l *Log) view {
		v := view{stats: l.Stats()}
		v.offs, v.ps = readAll(t, l, 0)
		for _, from := range []uint64{0, 7, 499, 1000, 1999} {
			v.bytes = append(v.bytes, l.BytesFrom(from))
			offs, _ := readAll(t, l, from)
			require.NotEmpty(t, offs)
		}
		return v
	}
	names, _ := fs.List(dir)
	var seals []string
	for _, n := range names {
		if filepath.Ext(n) == ".seal" {
			seals = append(seals, n)
		}
	}
	require.Greater(t, len(seals), 10, "every sealed segment has its seal")

	l = openMem(t, fs, 4096)
	onSeals := look(l)
	for _, seg := range l.segments[:len(l.segments)-1] {
		require.False(t, seg.verified, "segment %s opened on its seal", seg.name)
	}
	require.NoError(t, l.Close())

	// Without seals, every segment is scanned, and sealed again.
	for _, n := range seals {
		require.NoError(t, fs.Remove(filepath.Join(dir, n)))
	}
	l = openMem(t, fs, 4096)
	scanned := look(l)
	require.NoError(t, l.Close())
	require.Equal(t, scanned, onSeals)
	for _, n := range seals {
		_, ok := fs.Bytes(filepath.Join(dir, n))
		require.True(t, ok, "seal %s written again after the scan", n)
	}

	// A torn seal, one for the wrong base and one whose segment grew are
	// not used.
	b, _ := fs.Bytes(filepath.Join(dir, seals[1]))
	fs.SetBytes(filepath.Join(dir, seals[1]), b[:len(b)-3])
	b, _ = fs.Bytes(filepath.Join(dir, seals[2]))
	fs.SetBytes(filepath.Join(dir, seals[3]), b)
	seg := filepath.Join(dir, segmentName(l.segments[4].base))
	b, _ = fs.Bytes(seg)
	fs.SetBytes(seg, append(b, appendFrame(nil, 1<<40, payload(0))...))
	m := NewMetrics(nil)
	l, err = Open(Options{Dir: dir, FS: fs, SegmentBytes: 4096, Metrics: m})
	require.NoError(t, err)
	defer l.Close()
	for i := 1; i <= 4; i++ {
		require.Equal(t, i != 2, l.segments[i].verified, "segment %d scanned", i)
	}
	require.True(t, l.segments[0].compacted)
	require.False(t, l.segments[0].verified, "a compacted segment is opened on its seal too")
	require.Equal(t, 1.0, testutil.ToFloat64(m.CorruptBytes)/float64(frameHeaderSize+len(payload(0))),
		"the bytes past the end the seal knew are found at open")
	again := look(l)
	require.Equal(t, scanned.offs, again.offs)
}
