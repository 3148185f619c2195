package buffer

import (
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// FuzzOpenSegment hands arbitrary bytes to recovery as the only segment: Open
// must not panic, every record it then serves must have a valid frame, offsets
// must increase, and appending must continue after them.
func FuzzOpenSegment(f *testing.F) {
	valid := func(n int) []byte {
		fs := vfs.NewMem()
		l, err := Open(Options{Dir: dir, FS: fs})
		if err != nil {
			f.Fatal(err)
		}
		for i := range n {
			if _, err := l.Append(payload(i)); err != nil {
				f.Fatal(err)
			}
		}
		l.Close()
		b, _ := fs.Bytes(filepath.Join(dir, segmentName(0)))
		return b
	}
	f.Add(valid(0))
	f.Add(valid(3))
	torn := valid(5)
	f.Add(torn[:len(torn)-7])
	flipped := valid(5)
	flipped[40] ^= 1
	f.Add(flipped)
	f.Add([]byte("HFLG"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := vfs.NewMem()
		if err := fs.MkdirAll(dir); err != nil {
			t.Fatal(err)
		}
		seg, _ := fs.Create(filepath.Join(dir, segmentName(0)))
		seg.Write(data)
		seg.Sync()
		fs.SyncDir(dir)
		l, err := Open(Options{Dir: dir, FS: fs})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer l.Close()
		r := l.NewReader(0)
		defer r.Close()
		var last uint64
		n := 0
		for {
			off, p, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if n > 0 && off <= last {
				t.Fatalf("offset %d after %d", off, last)
			}
			if len(p) == 0 {
				t.Fatal("empty payload")
			}
			last = off
			n++
		}
		next := l.NextOffset()
		if n > 0 && next <= last {
			t.Fatalf("next offset %d not after last record %d", next, last)
		}
		off, err := l.Append([]byte("after"))
		if err != nil || off != next {
			t.Fatalf("append after recovery: off %d err %v, want %d", off, err, next)
		}
	})
}

// FuzzDecodeCursors: never panics; whatever decodes re-encodes identically.
func FuzzDecodeCursors(f *testing.F) {
	f.Add(encodeCursors(map[string]uint64{"cloud": 42, "http": 7}))
	f.Add(encodeCursors(map[string]uint64{}))
	f.Add([]byte("HFCR\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCursors(data)
		if err != nil {
			return
		}
		if got := encodeCursors(c); string(got) != string(data) {
			t.Fatalf("re-encoding differs:\n%x\n%x", got, data)
		}
	})
}
