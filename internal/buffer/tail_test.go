package buffer

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// TestLiveReaderReadsFromTail: a reader that keeps up with the appends reads
// nothing back from the files, across segment rolls.
func TestLiveReaderReadsFromTail(t *testing.T) {
	m := NewMetrics(nil)
	l, err := Open(Options{Dir: dir, FS: vfs.NewMem(), SegmentBytes: 4096, MaxBytes: 1 << 30, Metrics: m})
	require.NoError(t, err)
	defer l.Close()
	r := l.NewReader(0)
	defer r.Close()
	for i := range 1000 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
		off, p, err := r.Next()
		require.NoError(t, err)
		require.Equal(t, uint64(i), off)
		require.Equal(t, string(payload(i)), string(p))
		_, _, err = r.Next()
		require.ErrorIs(t, err, io.EOF)
	}
	require.Greater(t, l.Stats().Segments, 5)
	require.Zero(t, testutil.ToFloat64(m.FileReadBytes))
	require.Positive(t, testutil.ToFloat64(m.TailReadBytes))
}

// TestTailReadersMatchAppends: readers at the live end, readers a little
// behind and readers far behind a tail much smaller than what they lag, all
// moving at random between random commit groups (a record larger than the
// whole tail among them), each return every record in offset order with its
// payload, whether it found the bytes in memory or in the file.
func TestTailReadersMatchAppends(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			m := NewMetrics(nil)
			l, err := Open(Options{Dir: dir, FS: vfs.NewMem(), SegmentBytes: 8192, MaxBytes: 1 << 30,
				TailBytes: 1000, Metrics: m})
			require.NoError(t, err)
			defer l.Close()
			var want [][]byte
			readers := make([]RecordReader, 4)
			for i := range readers {
				readers[i] = l.NewReader(0)
				defer readers[i].Close()
			}
			// next reads one record with r and checks it.
			next := func(r RecordReader) bool {
				at := r.Position()
				off, p, err := r.Next()
				if errors.Is(err, io.EOF) {
					require.Equal(t, uint64(len(want)), at, "EOF only at the durable end")
					return false
				}
				require.NoError(t, err)
				require.Equal(t, at, off, "no gap, no repeat")
				require.Equal(t, string(want[off]), string(p), "offset %d", off)
				return true
			}
			for range 300 {
				group := make([][]byte, 1+rng.IntN(12))
				for i := range group {
					n := 1 + rng.IntN(200)
					if rng.IntN(50) == 0 {
						n = 1500 // more than the whole tail
					}
					group[i] = make([]byte, n)
					for j := range group[i] {
						group[i][j] = byte(rng.Uint32())
					}
				}
				first, err := l.Append(group...)
				require.NoError(t, err)
				require.Equal(t, uint64(len(want)), first)
				want = append(want, group...)
				// Reader 0 keeps up, 1 reads a few, 2 and 3 rarely.
				for i, r := range readers {
					steps := []int{1 << 30, rng.IntN(16), rng.IntN(4) * rng.IntN(2), rng.IntN(200) * min(1, rng.IntN(20)/19)}[i]
					for range steps {
						if !next(r) {
							break
						}
					}
				}
			}
			for _, r := range readers {
				for next(r) {
				}
			}
			fresh := l.NewReader(0)
			defer fresh.Close()
			for next(fresh) {
			}
			require.Positive(t, testutil.ToFloat64(m.TailReadBytes))
			require.Positive(t, testutil.ToFloat64(m.FileReadBytes))
		})
	}
}

// TestTailOff: with TailBytes negative every read is from the file.
func TestTailOff(t *testing.T) {
	m := NewMetrics(nil)
	l, err := Open(Options{Dir: dir, FS: vfs.NewMem(), SegmentBytes: 4096, MaxBytes: 1 << 30, TailBytes: -1, Metrics: m})
	require.NoError(t, err)
	defer l.Close()
	for i := range 100 {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
	}
	offs, _ := readAll(t, l, 0)
	require.Len(t, offs, 100)
	require.Zero(t, testutil.ToFloat64(m.TailReadBytes))
}
