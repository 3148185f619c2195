package replica

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// A mirrored root is a file or a directory relative to the data directory;
// a directory mirrors the regular files directly in it. Names ending in .tmp
// are files being written and never mirrored.

// cleanRoots checks and normalises the roots to slash form.
func cleanRoots(roots []string) ([]string, error) {
	out := make([]string, 0, len(roots))
	for _, r := range roots {
		c := path.Clean(filepath.ToSlash(r))
		if c == "." || !filepath.IsLocal(filepath.FromSlash(c)) {
			return nil, fmt.Errorf("replica: mirrored file %q is not a path inside the data directory", r)
		}
		out = append(out, c)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// underRoots reports whether name is a root or a file directly in one.
func underRoots(roots []string, name string) bool {
	return slices.Contains(roots, name) || slices.Contains(roots, path.Dir(name))
}

func mirrorable(name string) bool { return !strings.HasSuffix(name, ".tmp") }

// fileStat is what a file's cached digest was computed for.
type fileStat struct {
	size  int64
	mtime time.Time
	sum   [digestSize]byte
}

// scanRoots lists the regular files under roots in dir, by slash name.
func scanRoots(dir string, roots []string) (map[string]fs.FileInfo, error) {
	out := map[string]fs.FileInfo{}
	for _, root := range roots {
		p := filepath.Join(dir, filepath.FromSlash(root))
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			if mirrorable(root) {
				out[root] = fi
			}
			continue
		}
		if !fi.IsDir() {
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || !mirrorable(e.Name()) {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			if err != nil {
				return nil, err
			}
			out[root+"/"+e.Name()] = info
		}
	}
	return out, nil
}

// digests returns the SHA-256 of every file under roots in dir, reusing
// cache entries whose size and modification time are unchanged; cache is
// updated to hold exactly the files found.
func digests(dir string, roots []string, cache map[string]fileStat) (map[string][digestSize]byte, error) {
	files, err := scanRoots(dir, roots)
	if err != nil {
		return nil, err
	}
	out := make(map[string][digestSize]byte, len(files))
	for name, fi := range files {
		if c, ok := cache[name]; ok && c.size == fi.Size() && c.mtime.Equal(fi.ModTime()) {
			out[name] = c.sum
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(data)
		cache[name] = fileStat{size: fi.Size(), mtime: fi.ModTime(), sum: sum}
		out[name] = sum
	}
	for name := range cache {
		if _, ok := out[name]; !ok {
			delete(cache, name)
		}
	}
	return out, nil
}

// writeMirrored replaces name under dir with data atomically: temporary file,
// fsync, rename, fsync the directory.
func writeMirrored(dir, name string, data []byte) error {
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := vfs.OS.MkdirAll(filepath.Dir(p)); err != nil {
		return err
	}
	return vfs.WriteAtomic(vfs.OS, p, data)
}

// deleteMirrored deletes name under dir and fsyncs its directory.
func deleteMirrored(dir, name string) error {
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := vfs.OS.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return vfs.OS.SyncDir(filepath.Dir(p))
}
