package process

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/holdfast-edge/holdfast/internal/window"
)

// Spilling window state to disk: the memory trigger's action. While it is on
// (SetSpill), every spill pass of a worker moves the streams that had no item
// since its previous pass out of its window engine into its spill file (the
// checkpoint encoding of each stream, docs/format/spill.md) and keeps in
// memory only what idle timeouts, status and queries need without the
// windows. Anything that changes a spilled stream's windows loads it back
// first (load), so that the outputs are exactly those of a run that never
// spilled. A worker runs a pass on its idle ticker (every tenth of the idle
// timeout, at least 100 ms); when spilling is turned off, the next tick loads
// every spilled stream back.
//
// The file is a cache: checkpoints take the spilled streams' states from it,
// and a start deletes it, since the checkpoint and the log rebuild the state.

// spillRecordHeader is the length and CRC before each state.
const spillRecordHeader = 8

// compactMin is the least file size worth compacting.
const compactMin = 1 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// SetSpill turns spilling window state to disk on or off (off loads the
// spilled streams back, on each worker's next tick). Without
// Options.SpillDir it does nothing.
func (p *Processor) SetSpill(on bool) {
	if p.opts.SpillDir != "" {
		p.spillOn.Store(on)
	}
}

// Spilling reports whether spilling is on.
func (p *Processor) Spilling() bool { return p.spillOn.Load() }

// clearSpillDir deletes the spill files a previous run left: a cache.
func clearSpillDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spill directory: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("spill directory: %w", err)
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, "worker-") && (strings.HasSuffix(n, ".spill") || strings.HasSuffix(n, ".tmp")) {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return fmt.Errorf("spill directory: %w", err)
			}
		}
	}
	return nil
}

// spilledStream is what a worker keeps of a spilled stream.
type spilledStream struct {
	off    int64 // of the record
	n      int   // state bytes
	crc    uint32
	w      int64 // watermark
	hasW   bool
	raised bool // w is above the watermark in the state: apply it on load
	end    int64
	hasEnd bool // end is the stream's earliest window end
	late   uint64
	open   int
}

func (m *spilledStream) size() int64 { return spillRecordHeader + int64(m.n) }

// spillFile is a worker's spill file: records appended at size, live bytes
// of them still referenced.
type spillFile struct {
	path       string
	f          *os.File
	size, live int64
}

func openSpillFile(path string) (*spillFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	return &spillFile{path: path, f: f}, nil
}

// write appends a record of state and returns its offset.
func (sf *spillFile) write(state []byte) (int64, error) {
	rec := make([]byte, spillRecordHeader, spillRecordHeader+len(state))
	binary.LittleEndian.PutUint32(rec, uint32(len(state)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(state, crcTable))
	rec = append(rec, state...)
	off := sf.size
	if _, err := sf.f.WriteAt(rec, off); err != nil {
		return 0, fmt.Errorf("spill file %s: %w", sf.path, err)
	}
	sf.size += int64(len(rec))
	sf.live += int64(len(rec))
	return off, nil
}

// read returns the state of the record m points to, checked.
func (sf *spillFile) read(m *spilledStream) ([]byte, error) {
	rec := make([]byte, m.size())
	if _, err := sf.f.ReadAt(rec, m.off); err != nil {
		return nil, fmt.Errorf("spill file %s at %d: %w", sf.path, m.off, err)
	}
	n, crc := binary.LittleEndian.Uint32(rec), binary.LittleEndian.Uint32(rec[4:])
	state := rec[spillRecordHeader:]
	if int(n) != m.n || crc != m.crc || crc32.Checksum(state, crcTable) != crc {
		return nil, fmt.Errorf("spill file %s at %d: record damaged (length or CRC-32C differ)", sf.path, m.off)
	}
	return state, nil
}

func (sf *spillFile) truncate() error {
	sf.size, sf.live = 0, 0
	if err := sf.f.Truncate(0); err != nil {
		return fmt.Errorf("spill file %s: %w", sf.path, err)
	}
	return nil
}

func (sf *spillFile) close() {
	sf.f.Close()
	os.Remove(sf.path)
}

// spillTick runs a spill pass while spilling is on, and loads the spilled
// streams back once it is off. Called with w.mu held, between items.
func (w *worker) spillTick() {
	if w.p.spillOn.Load() {
		w.spillPass()
	} else if len(w.spilled) > 0 {
		w.loadAll()
	}
}

// spillPass spills every stream not touched since the previous pass.
func (w *worker) spillPass() {
	for _, name := range w.win.Streams() {
		st := w.streams[name]
		if st != nil && st.touched {
			st.touched = false
			continue
		}
		if err := w.spillStream(name); err != nil {
			if !w.spillFailing { // once until a spill succeeds again, not every pass
				w.p.opts.Logger.Error("cannot spill window state; it stays in memory", "stream", name, "err", err)
			}
			w.spillFailing = true
			return
		}
		w.spillFailing = false
	}
}

// spillStream moves the stream's state from the engine to the spill file.
func (w *worker) spillStream(name string) error {
	if w.spill == nil {
		sf, err := openSpillFile(filepath.Join(w.p.opts.SpillDir, fmt.Sprintf("worker-%d.spill", w.id)))
		if err != nil {
			return err
		}
		w.spill = sf
	}
	w.spillBuf = w.win.AppendStreamState(w.spillBuf[:0], name)
	off, err := w.spill.write(w.spillBuf)
	if err != nil {
		return err
	}
	m := &spilledStream{off: off, n: len(w.spillBuf), crc: crc32.Checksum(w.spillBuf, crcTable), late: w.win.Late(name)}
	m.w, m.hasW = w.win.Watermark(name)
	m.end, m.hasEnd = w.win.EarliestEnd(name)
	m.open, _ = w.win.DropStream(name)
	w.spilled[name] = m
	met := w.p.opts.Metrics
	met.SpilledStreams.Inc()
	met.SpillBytes.Add(float64(m.size()))
	met.Spills.Inc()
	return nil
}

// load puts a spilled stream back into the engine; it does nothing for one
// that is not spilled. A spill file that cannot be read back is a broken
// cache, and the state it held is lost to this run: the worker panics, and
// the restart rebuilds it from the checkpoint and the log.
func (w *worker) load(name string) {
	m := w.spilled[name]
	if m == nil {
		return
	}
	state, err := w.spill.read(m)
	if err == nil {
		_, err = w.win.RestoreStream(state)
	}
	if err != nil {
		panic(fmt.Sprintf("process: loading stream %q back from the spill file: %v", name, err))
	}
	if m.raised {
		w.win.Advance(name, m.w) // below the earliest window end: closes nothing
	}
	if st := w.streams[name]; st != nil && st.noSite {
		w.win.SetNoSite(name)
	}
	delete(w.spilled, name)
	w.spill.live -= m.size()
	met := w.p.opts.Metrics
	met.SpilledStreams.Dec()
	met.SpillBytes.Sub(float64(m.size()))
	met.SpillLoads.Inc()
	w.shrinkSpill()
}

// loadAll loads every spilled stream back.
func (w *worker) loadAll() {
	for _, name := range slices.Sorted(maps.Keys(w.spilled)) {
		w.load(name)
	}
}

// shrinkSpill empties the spill file once nothing in it is live, and
// compacts it once most of it is garbage.
func (w *worker) shrinkSpill() {
	sf := w.spill
	var err error
	switch {
	case len(w.spilled) == 0:
		err = sf.truncate()
	case sf.size >= compactMin && sf.live < sf.size/4:
		err = w.compactSpill()
	}
	if err != nil {
		w.p.opts.Logger.Warn("cannot shrink the spill file", "err", err)
	}
}

// compactSpill copies the live records to a new file that replaces the old.
func (w *worker) compactSpill() error {
	old := w.spill
	tmp, err := openSpillFile(old.path + ".tmp")
	if err != nil {
		return err
	}
	offs := make(map[string]int64, len(w.spilled))
	for name, m := range w.spilled {
		state, err := old.read(m)
		if err == nil {
			offs[name], err = tmp.write(state)
		}
		if err != nil {
			tmp.close()
			return err
		}
	}
	if err := os.Rename(tmp.path, old.path); err != nil {
		tmp.close()
		return fmt.Errorf("spill file: %w", err)
	}
	old.f.Close()
	tmp.path = old.path
	w.spill = tmp
	for name, off := range offs {
		w.spilled[name].off = off
	}
	return nil
}

// closeSpill drops the worker's spill file when it stops.
func (w *worker) closeSpill() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.spill == nil {
		return
	}
	met := w.p.opts.Metrics
	for _, m := range w.spilled {
		met.SpilledStreams.Dec()
		met.SpillBytes.Sub(float64(m.size()))
	}
	w.spilled = map[string]*spilledStream{}
	w.spill.close()
	w.spill = nil
}

// advance raises the stream's watermark. A spilled stream is loaded only if
// the watermark closes one of its windows; a lower one is remembered.
func (w *worker) advance(name string, wm int64) {
	if m := w.spilled[name]; m != nil {
		if m.hasW && wm <= m.w {
			return // the engine would not change either
		}
		if !m.hasEnd || wm < m.end {
			m.w, m.hasW, m.raised = wm, true, true
			return
		}
		w.load(name)
	}
	w.win.Advance(name, wm)
}

// watermark is the engine's Watermark, spilled streams included.
func (w *worker) watermark(name string) (int64, bool) {
	if m := w.spilled[name]; m != nil {
		return m.w, m.hasW
	}
	return w.win.Watermark(name)
}

// earliestEnd is the engine's EarliestEnd, spilled streams included.
func (w *worker) earliestEnd(name string) (int64, bool) {
	if m := w.spilled[name]; m != nil {
		return m.end, m.hasEnd
	}
	return w.win.EarliestEnd(name)
}

// lateCount is the engine's Late, spilled streams included.
func (w *worker) lateCount(name string) uint64 {
	if m := w.spilled[name]; m != nil {
		return m.late
	}
	return w.win.Late(name)
}

// openWindows is the engine's OpenWindows, spilled streams included.
func (w *worker) openWindows() int {
	n := w.win.OpenWindows()
	for _, m := range w.spilled {
		n += m.open
	}
	return n
}

// streamState returns the stream's encoded state, spilled or not.
func (w *worker) streamState(name string) []byte {
	m := w.spilled[name]
	if m == nil {
		return w.win.AppendStreamState(nil, name)
	}
	if !m.raised {
		state, err := w.spill.read(m)
		if err != nil {
			panic(fmt.Sprintf("process: reading stream %q from the spill file: %v", name, err))
		}
		return state
	}
	var state []byte
	w.withSpilled(name, func(e *window.Engine) { state = e.AppendStreamState(nil, name) })
	return state
}

// withSpilled calls f with a scratch engine that holds the spilled stream
// as the worker's engine would if it were loaded.
func (w *worker) withSpilled(name string, f func(*window.Engine)) {
	m := w.spilled[name]
	if w.scratch == nil {
		o := w.p.opts.Window
		o.OnClose = nil
		var err error
		if w.scratch, err = window.New(o); err != nil {
			panic(fmt.Sprintf("process: scratch window engine: %v", err)) // the worker's own options
		}
	}
	state, err := w.spill.read(m)
	if err == nil {
		_, err = w.scratch.RestoreStream(state)
	}
	if err != nil {
		panic(fmt.Sprintf("process: reading stream %q from the spill file: %v", name, err))
	}
	defer w.scratch.DropStream(name)
	if m.raised {
		w.scratch.Advance(name, m.w)
	}
	f(w.scratch)
}

// engineOf calls f with the engine that holds the stream: the worker's, or
// for a spilled stream a scratch engine holding it (withSpilled).
func (w *worker) engineOf(name string, f func(*window.Engine)) {
	if w.spilled[name] == nil {
		f(w.win)
		return
	}
	w.withSpilled(name, f)
}

// forcedSpillTick runs a spill tick every Options.spillEvery items (tests).
func (w *worker) forcedSpillTick() {
	if n := w.p.opts.spillEvery; n > 0 {
		if w.spillItems++; w.spillItems%n == 0 {
			w.spillTick()
		}
	}
}
