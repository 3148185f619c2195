package recovery

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// DefaultSortMemory is what the records waiting to be put in offset order may
// take in memory, unless Options.SortMemory says otherwise.
const DefaultSortMemory = 32 << 20

// entryBytes is what the sorter counts for each record it holds besides its
// payload: its entry in the index.
const entryBytes = 16

// runBuffer is the read buffer of each sorted run while they are merged.
const runBuffer = 64 << 10

// sorter puts records that arrive in any order into offset order in bounded
// memory: an external merge sort. It holds records until they take limit
// bytes (payloads plus entryBytes each), then sorts them by offset and writes
// them to a run file in dir. merge reads the runs and the records still held
// back in one ascending sequence.
//
// The cloud hands out a node's records in the order they were stored, which
// is offset order only per subject and lane (docs/format/cloud.md): lanes go
// at their own pace, so how far apart two neighbours in the log arrive has no
// bound, and nothing short of all of them says where the holes are. A
// recovery that fits in limit never touches the disk.
//
// Memory: limit while reading, and while merging the held records plus
// runBuffer and one record per run (a run is at least limit bytes of records,
// so the runs of 10 M records of 60–200 bytes at the default limit are fewer
// than 70).
type sorter struct {
	dir   string
	limit int

	arena []byte  // payloads of the records held, one after another
	idx   []entry // the records held
	runs  []string
	files int // runs written, for their names

	held, peak int // records held in memory now, and at most
}

type entry struct {
	off      uint64
	pos, len uint32
}

func newSorter(dir string, limit int) *sorter {
	return &sorter{dir: dir, limit: max(limit, 1)}
}

// add holds a copy of p as the record at off.
func (s *sorter) add(off uint64, p []byte) error {
	if len(s.idx) > 0 && len(s.arena)+len(p)+entryBytes*(len(s.idx)+1) > s.limit {
		if err := s.spill(); err != nil {
			return err
		}
	}
	if uint64(len(s.arena))+uint64(len(p)) > 1<<32-1 {
		return fmt.Errorf("recovery: record %d of %d bytes does not fit the sort buffer", off, len(p))
	}
	// The buffers double, but not past the limit (append's growth could
	// take up to twice it).
	if need := len(s.arena) + len(p); need > cap(s.arena) {
		s.arena = regrow(s.arena, max(need, min(max(2*cap(s.arena), 64<<10), s.limit)))
	}
	if len(s.idx) == cap(s.idx) {
		s.idx = regrow(s.idx, max(len(s.idx)+1, min(max(2*cap(s.idx), 4096), s.limit/entryBytes)))
	}
	s.idx = append(s.idx, entry{off: off, pos: uint32(len(s.arena)), len: uint32(len(p))})
	s.arena = append(s.arena, p...)
	s.held = len(s.idx)
	s.peak = max(s.peak, s.held)
	return nil
}

// regrow returns b in a new array of capacity n.
func regrow[T any](b []T, n int) []T {
	c := make([]T, len(b), n)
	copy(c, b)
	return c
}

func (s *sorter) sortHeld() {
	slices.SortStableFunc(s.idx, func(a, b entry) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
}

// spill writes the records held, sorted, to a new run file and forgets them
// (keeping the memory for the next ones).
func (s *sorter) spill() error {
	s.sortHeld()
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	name := filepath.Join(s.dir, fmt.Sprintf("run-%06d", s.files))
	s.files++
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, runBuffer)
	var hdr [2 * binary.MaxVarintLen64]byte
	for _, e := range s.idx {
		n := binary.PutUvarint(hdr[:], e.off)
		n += binary.PutUvarint(hdr[n:], uint64(e.len))
		w.Write(hdr[:n])
		w.Write(s.arena[e.pos : e.pos+e.len])
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("recovery: writing sort run %s: %w", name, err)
	}
	s.runs = append(s.runs, name)
	s.arena, s.idx = s.arena[:0], s.idx[:0]
	s.held = 0
	return nil
}

// source is one ascending sequence the merge reads: a run file or the
// records still held.
type source struct {
	off uint64
	p   []byte

	r    *bufio.Reader // a run; nil: the held records
	f    *os.File
	name string
	s    *sorter
	i    int
}

// next moves to the source's next record; false at its end.
func (src *source) next() (bool, error) {
	if src.r == nil {
		if src.i >= len(src.s.idx) {
			return false, nil
		}
		e := src.s.idx[src.i]
		src.i++
		src.off, src.p = e.off, src.s.arena[e.pos:e.pos+e.len]
		return true, nil
	}
	off, err := binary.ReadUvarint(src.r)
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("recovery: reading sort run %s: %w", src.name, err)
	}
	n, err := binary.ReadUvarint(src.r)
	if err == nil && n > 1<<32 {
		err = errors.New("record length out of range")
	}
	if err == nil {
		src.p = slices.Grow(src.p[:0], int(n))[:n]
		_, err = io.ReadFull(src.r, src.p)
	}
	if err != nil {
		return false, fmt.Errorf("recovery: reading sort run %s: %w", src.name, noEOF(err))
	}
	src.off = off
	return true, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

type sources []*source

func (h sources) Len() int           { return len(h) }
func (h sources) Less(i, j int) bool { return h[i].off < h[j].off }
func (h sources) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sources) Push(x any)        { *h = append(*h, x.(*source)) }
func (h *sources) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// merge calls fn with every record added, in ascending offset order, until fn
// returns errStop or an error. An offset added more than once is passed once
// (the copy read first) when its copies are equal, and is an error otherwise.
// p is valid only during the call.
func (s *sorter) merge(fn func(off uint64, p []byte) error) error {
	s.sortHeld()
	var h sources
	defer func() {
		for _, src := range h {
			if src.f != nil {
				src.f.Close()
			}
		}
	}()
	add := func(src *source) error {
		ok, err := src.next()
		if err != nil || !ok {
			if src.f != nil {
				src.f.Close()
			}
			return err
		}
		h = append(h, src)
		return nil
	}
	for _, name := range s.runs {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		if err := add(&source{r: bufio.NewReaderSize(f, runBuffer), f: f, name: name}); err != nil {
			return err
		}
	}
	if err := add(&source{s: s}); err != nil {
		return err
	}
	// s.held stays counting the held records, and one per run, while merging.
	s.held = len(s.idx) + len(s.runs)
	s.peak = max(s.peak, s.held)
	heap.Init(&h)
	var last []byte
	lastOff, any := uint64(0), false
	for len(h) > 0 {
		src := h[0]
		if any && src.off == lastOff {
			if !bytes.Equal(src.p, last) {
				return fmt.Errorf("the cloud holds two different records at offset %d", src.off)
			}
		} else {
			if err := fn(src.off, src.p); err != nil {
				if errors.Is(err, errStop) {
					return nil
				}
				return err
			}
			lastOff, any = src.off, true
			last = append(last[:0], src.p...)
		}
		ok, err := src.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
			continue
		}
		if src.f != nil {
			src.f.Close()
		}
		heap.Pop(&h)
	}
	return nil
}

// errStop ends a merge early without error.
var errStop = errors.New("stop")

// remove deletes the run files and lets go of the records held.
func (s *sorter) remove() error {
	s.arena, s.idx = nil, nil
	return os.RemoveAll(s.dir)
}
