package vfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// Op names a file-system operation, for error injection.
type Op int

const (
	OpCreate Op = iota
	OpOpen
	OpRead
	OpWrite
	OpSync
	OpTruncate
	OpRemove
	OpRename
	OpSyncDir
)

// ErrCrashed is returned by handles opened before MemFS.Crash.
var ErrCrashed = errors.New("vfs: file handle from before the crash")

// MemFS is an in-memory FS that tracks what has been made durable. It exists for
// tests: Crash turns it into what a disk would hold after power loss.
type MemFS struct {
	mu sync.Mutex
	// All fields guarded by mu.
	files   map[string]*memNode // the namespace now
	durable map[string]*memNode // the namespace as of the last SyncDir of each dir
	dirs    map[string]bool
	gen     int // incremented by Crash; handles of an older generation are dead
	inject  func(op Op, name string) error
}

// memNode is a file's contents. Files are only ever appended to or truncated, so
// what the last Sync made durable is the prefix data[:synced]. A truncation is
// taken as durable at once (holdfast syncs right after every truncation).
type memNode struct {
	data   []byte
	synced int
}

// NewMem returns an empty MemFS.
func NewMem() *MemFS {
	return &MemFS{
		files:   map[string]*memNode{},
		durable: map[string]*memNode{},
		dirs:    map[string]bool{},
	}
}

// Inject installs fn, consulted before every operation; a non-nil result is
// returned in place of performing it. nil removes the hook.
func (m *MemFS) Inject(fn func(op Op, name string) error) {
	m.mu.Lock()
	m.inject = fn
	m.mu.Unlock()
}

// Crash simulates power loss: files not made durable by a directory sync vanish,
// and every file is cut back to its last synced contents. For each file with
// unsynced bytes, torn (if not nil) is given those bytes and returns what of them
// reached the disk anyway (a prefix, possibly damaged) — a torn final write.
// Handles opened before the crash fail with ErrCrashed.
func (m *MemFS) Crash(torn func(name string, unsynced []byte) []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	files := make(map[string]*memNode, len(m.durable))
	for name, n := range m.durable {
		data := append([]byte(nil), n.data[:n.synced]...)
		if torn != nil && len(n.data) > n.synced {
			data = append(data, torn(name, append([]byte(nil), n.data[n.synced:]...))...)
		}
		nn := &memNode{data: data, synced: len(data)}
		files[name] = nn
	}
	m.files = files
	m.durable = make(map[string]*memNode, len(files))
	for k, v := range files {
		m.durable[k] = v
	}
}

// Bytes returns a copy of a file's current contents, for tests that damage files.
func (m *MemFS) Bytes(name string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[filepath.Clean(name)]
	if !ok {
		return nil, false
	}
	return append([]byte(nil), n.data...), true
}

// SetBytes replaces a file's contents as if they had been written and synced.
func (m *MemFS) SetBytes(name string, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.files[filepath.Clean(name)]
	if !ok {
		return
	}
	n.data = append([]byte(nil), data...)
	n.synced = len(data)
}

func (m *MemFS) check(op Op, name string) error {
	if m.inject != nil {
		if err := m.inject(op, name); err != nil {
			return &os.PathError{Op: opName(op), Path: name, Err: err}
		}
	}
	return nil
}

func opName(op Op) string {
	return [...]string{"create", "open", "read", "write", "sync", "truncate", "remove", "rename", "syncdir"}[op]
}

func (m *MemFS) open(name string, op Op, create bool) (File, error) {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(op, name); err != nil {
		return nil, err
	}
	if !m.dirs[filepath.Dir(name)] {
		return nil, &os.PathError{Op: opName(op), Path: name, Err: os.ErrNotExist}
	}
	n, ok := m.files[name]
	switch {
	case create:
		n = &memNode{}
		m.files[name] = n
	case !ok:
		return nil, &os.PathError{Op: opName(op), Path: name, Err: os.ErrNotExist}
	}
	f := &memFile{fs: m, node: n, name: name, gen: m.gen}
	if op == OpOpen && !create {
		return f, nil
	}
	f.pos = int64(len(n.data))
	return f, nil
}

func (m *MemFS) Create(name string) (File, error) { return m.open(name, OpCreate, true) }
func (m *MemFS) OpenRW(name string) (File, error) { return m.open(name, OpCreate, false) }
func (m *MemFS) Open(name string) (File, error) {
	f, err := m.open(name, OpOpen, false)
	if err != nil {
		return nil, err
	}
	f.(*memFile).pos = 0
	f.(*memFile).readOnly = true
	return f, nil
}

func (m *MemFS) Remove(name string) error {
	name = filepath.Clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpRemove, name); err != nil {
		return err
	}
	if _, ok := m.files[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(m.files, name)
	return nil
}

func (m *MemFS) Rename(oldname, newname string) error {
	oldname, newname = filepath.Clean(oldname), filepath.Clean(newname)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpRename, newname); err != nil {
		return err
	}
	n, ok := m.files[oldname]
	if !ok {
		return &os.PathError{Op: "rename", Path: oldname, Err: os.ErrNotExist}
	}
	delete(m.files, oldname)
	m.files[newname] = n
	return nil
}

func (m *MemFS) MkdirAll(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		m.dirs[d] = true
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (m *MemFS) List(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return nil, &os.PathError{Op: "list", Path: dir, Err: os.ErrNotExist}
	}
	var names []string
	for name := range m.files {
		if filepath.Dir(name) == dir {
			names = append(names, filepath.Base(name))
		}
	}
	for d := range m.dirs {
		if filepath.Dir(d) == dir && d != dir {
			names = append(names, filepath.Base(d))
		}
	}
	sort.Strings(names)
	return names, nil
}

func (m *MemFS) SyncDir(dir string) error {
	dir = filepath.Clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(OpSyncDir, dir); err != nil {
		return err
	}
	for name := range m.durable {
		if filepath.Dir(name) == dir {
			delete(m.durable, name)
		}
	}
	for name, n := range m.files {
		if filepath.Dir(name) == dir {
			m.durable[name] = n
		}
	}
	return nil
}

type memFile struct {
	fs       *MemFS
	node     *memNode
	name     string
	gen      int
	pos      int64 // guarded by fs.mu
	readOnly bool
	closed   bool
}

func (f *memFile) live(op Op) error {
	if f.closed {
		return os.ErrClosed
	}
	if f.gen != f.fs.gen {
		return ErrCrashed
	}
	return f.fs.check(op, f.name)
}

func (f *memFile) Read(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live(OpRead); err != nil {
		return 0, err
	}
	if f.pos >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[f.pos:])
	f.pos += int64(n)
	return n, nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live(OpRead); err != nil {
		return 0, err
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.readOnly {
		return 0, os.ErrPermission
	}
	if err := f.live(OpWrite); err != nil {
		return 0, err
	}
	f.node.data = append(f.node.data[:f.pos], p...)
	f.pos += int64(len(p))
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live(OpSync); err != nil {
		return err
	}
	f.node.synced = len(f.node.data)
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live(OpTruncate); err != nil {
		return err
	}
	if size < int64(len(f.node.data)) {
		f.node.data = f.node.data[:size]
	}
	f.node.synced = min(f.node.synced, len(f.node.data))
	if f.pos > size {
		f.pos = size
	}
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.live(OpRead); err != nil {
		return 0, err
	}
	return int64(len(f.node.data)), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	f.closed = true
	return nil
}
