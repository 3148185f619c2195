package buffer

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// fillSegments appends n records to a log with small segments.
func fillSegments(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := range n {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
	}
}

func evens(below uint64) []uint64 {
	var out []uint64
	for off := uint64(0); off < below; off += 2 {
		out = append(out, off)
	}
	return out
}

func all(hidden []uint64) []uint64 { return hidden }

// A compaction that fails, or a crash in the middle of one, leaves the
// segment as it was: after a reopen every record is there, and no temporary
// file stays behind.
func TestCompactionFailureKeepsSegment(t *testing.T) {
	for _, fail := range []vfs.Op{vfs.OpSync, vfs.OpRename} {
		t.Run(map[vfs.Op]string{vfs.OpSync: "fsync", vfs.OpRename: "rename"}[fail], func(t *testing.T) {
			fs := vfs.NewMem()
			l := openMem(t, fs, 4096)
			fillSegments(t, l, 2000)
			fs.Inject(func(op vfs.Op, name string) error {
				// A sync names the temporary file, a rename its target.
				if op == fail && (strings.HasSuffix(name, ".tmp") || op == vfs.OpRename) {
					return syscall.EIO
				}
				return nil
			})
			removed, err := l.Remove(evens(1000), all)
			require.Error(t, err)
			require.Empty(t, removed)
			fs.Inject(nil)
			offs, _ := readAll(t, l, 0)
			require.NotContains(t, offs, uint64(0), "records of a failed Remove stay hidden until a reopen")
			require.NoError(t, l.Close())

			l = openMem(t, fs, 4096)
			defer l.Close()
			offs, _ = readAll(t, l, 0)
			require.Len(t, offs, 2000, "a failed compaction removed nothing")
			names, err := fs.List(dir)
			require.NoError(t, err)
			for _, n := range names {
				require.False(t, strings.HasSuffix(n, ".tmp"), "left behind: %s", n)
			}
		})
	}
}

// A crash after a compaction's temporary file reached the disk but before
// its rename: the next open deletes it and keeps the segment whole.
func TestCrashBeforeCompactionRename(t *testing.T) {
	fs := vfs.NewMem()
	l := openMem(t, fs, 4096)
	fillSegments(t, l, 2000)
	require.NoError(t, l.Close())
	tmp := filepath.Join(dir, segmentName(0)+".tmp")
	fs.SetBytes(tmp, []byte("HFLG half a compacted segment"))
	l = openMem(t, fs, 4096)
	defer l.Close()
	offs, _ := readAll(t, l, 0)
	require.Len(t, offs, 2000)
	_, ok := fs.Bytes(tmp)
	require.False(t, ok, "the unfinished compaction is deleted")
}

// Compacted segments reopen with their gaps: offsets skip where records were
// removed, the next offset is where it was, and reading from any offset
// (removed ones included) starts at the next record held.
func TestCompactedSegmentsReopen(t *testing.T) {
	fs := vfs.NewMem()
	l := openMem(t, fs, 4096)
	fillSegments(t, l, 2000)
	removed, err := l.Remove(evens(2000), all)
	require.NoError(t, err)
	require.NotEmpty(t, removed)
	next := l.NextOffset()
	require.NoError(t, l.Close())
	l = openMem(t, fs, 4096)
	defer l.Close()
	require.Equal(t, next, l.NextOffset())
	offs, payloads := readAll(t, l, 0)
	require.Len(t, offs, 2000-len(removed))
	for i, off := range offs {
		require.Equal(t, string(payload(int(off))), payloads[i])
	}
	from, _ := readAll(t, l, removed[10])
	require.Equal(t, removed[10]+1, from[0], "a read from a removed offset starts at the next record held")
	_, err = l.Append(payload(2000))
	require.NoError(t, err)
}
