package process

import (
	"fmt"
	"hash/maphash"
	"maps"
	"slices"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Splitting a hot stream across workers (the seed's "stream skew →
// partitioning"). A stream is normally one worker's: its home. A split
// stream's devices are spread over the workers by a hash of the device id:
// each device's windows, and the event rules of its events, are the
// worker's its id hashes to, and only the site-wide windows stay at home,
// which gets every event for them (an AddSite item when the device's
// worker is another). Every window is still computed by one engine from all
// of its events in log order (window/split.go), so splitting changes no
// result, bit for bit: a device's worker is advanced to the stream's
// watermark before each of its events (an advance item, from the reader,
// which sees the whole stream), and so decides lateness and closes windows
// as the home would have.
//
// Which streams are split is fixed for a run: SetSplit restarts the
// processor, whose checkpoint (written on stopping) is redistributed to the
// new routing on restore (window.RedistributeStream). Before each
// checkpoint barrier every worker holding part of a split stream is
// advanced to its watermark, so that a checkpoint's parts of one stream
// share it.

// Item kinds for split streams.
const (
	kindAdvance  byte = 0xf4 // raise the stream's watermark to ts (no log record)
	kindSiteOnly byte = 0xf5 // an event for the site-wide windows only
)

// SetSplit asks for the streams to split across the workers (the hot
// streams); all splits every stream. A change restarts the processor.
func (p *Processor) SetSplit(streams []string, all bool) {
	want := map[string]bool{}
	for _, s := range streams {
		want[s] = true
	}
	p.modeMu.Lock()
	defer p.modeMu.Unlock()
	p.wantSplit, p.wantSplitAll = want, all
	p.restartIfNeededLocked()
}

// Split returns the streams split in this run, sorted, and whether every
// stream is.
func (p *Processor) Split() (streams []string, all bool) {
	p.modeMu.Lock()
	defer p.modeMu.Unlock()
	return slices.Sorted(maps.Keys(p.splitRun)), p.splitAllRun
}

// splitChangedLocked says whether the split asked for is not this run's.
func (p *Processor) splitChangedLocked() bool {
	return p.wantSplitAll != p.splitAllRun || !maps.Equal(p.wantSplit, p.splitRun)
}

// splitting says whether the stream is split in this run: only with more
// than one worker. Set before the run starts, read by its goroutines.
func (p *Processor) splitting(stream string) bool {
	return len(p.work) > 1 && (p.splitAllRun || p.splitRun[stream])
}

// deviceWorker is the worker of a split stream's device.
func (p *Processor) deviceWorker(device string) int {
	return int(maphash.String(p.seed, device) % uint64(len(p.work)))
}

// splitState is what the reader knows of a split stream: its watermark, and
// what it told each worker.
type splitState struct {
	w    int64
	hasW bool
	told []int64 // per worker: the watermark it was advanced to or saw
	has  []bool
}

// splitter is the reader's bookkeeping of split streams.
type splitter struct {
	p       *Processor
	streams map[string]*splitState
}

func (p *Processor) newSplitter() *splitter {
	return &splitter{p: p, streams: map[string]*splitState{}}
}

func (sp *splitter) state(stream string) *splitState {
	st := sp.streams[stream]
	if st == nil {
		n := len(sp.p.work)
		st = &splitState{told: make([]int64, n), has: make([]bool, n)}
		sp.streams[stream] = st
	}
	return st
}

// advance appends to batches[i] an advance of the stream to its watermark,
// if worker i has not got it.
func (sp *splitter) advance(batches [][]item, i int, stream string, st *splitState) {
	if st.hasW && (!st.has[i] || st.told[i] < st.w) {
		batches[i] = append(batches[i], item{kind: kindAdvance, stream: stream, ts: st.w})
		st.told[i], st.has[i] = st.w, true
	}
}

// event routes an event of a split stream: to its device's worker, after
// the stream's watermark, and, if that is not the home, for the site-wide
// windows to the home. It returns the workers it added items to.
func (sp *splitter) event(batches [][]item, home int, it item) (dw int) {
	st := sp.state(it.stream)
	dw = sp.p.deviceWorker(it.device)
	if st.hasW && (!st.has[dw] || st.told[dw] < st.w) {
		it.adv, it.wm = true, st.w // the watermark rides with the event
	}
	if dw != home {
		it.split = true
		site := it
		site.kind = kindSiteOnly
		batches[home] = append(batches[home], site)
	}
	batches[dw] = append(batches[dw], it)
	if w := it.ts - sp.p.lateness.Milliseconds(); !st.hasW || w > st.w {
		st.w, st.hasW = w, true
	}
	// The workers that got the event raised their watermark with it.
	for _, i := range []int{dw, home} {
		st.told[i], st.has[i] = max(st.told[i], st.w), true
	}
	return dw
}

// watermark routes a watermark record of a split stream to every worker.
func (sp *splitter) watermark(batches [][]item, it item) {
	st := sp.state(it.stream)
	if !st.hasW || it.ts > st.w {
		st.w, st.hasW = it.ts, true
	}
	for i := range batches {
		batches[i] = append(batches[i], it)
		st.told[i], st.has[i] = max(st.told[i], st.w), true
	}
}

// level advances every worker to every split stream's watermark: before a
// checkpoint barrier, so that its parts of a stream share a watermark.
func (sp *splitter) level(batches [][]item) {
	for _, name := range slices.Sorted(maps.Keys(sp.streams)) {
		st := sp.streams[name]
		for i := range batches {
			sp.advance(batches, i, name, st)
		}
	}
}

// outputWorker is the worker that produces a window or alert record of the
// stream for device ("" for site-wide): where a replay matches it.
func (p *Processor) outputWorker(home int, stream, device string) int {
	if device != "" && p.splitting(stream) {
		return p.deviceWorker(device)
	}
	return home
}

// restoreStreams installs a checkpoint's stream states in the workers,
// routed as this run routes: a stream held by several workers when the
// checkpoint was taken, or split now, is redistributed.
func (p *Processor) restoreStreams(states [][]byte) error {
	byName := map[string][][]byte{}
	var names []string
	for _, s := range states {
		name, err := window.StreamStateName(s)
		if err != nil {
			return err
		}
		if byName[name] == nil {
			names = append(names, name)
		}
		byName[name] = append(byName[name], s)
	}
	for _, name := range names {
		parts := byName[name]
		home := p.workerIndex(name)
		if len(parts) == 1 && !p.splitting(name) {
			if _, err := p.work[home].win.RestoreStream(parts[0]); err != nil {
				return fmt.Errorf("stream %q: %w", name, err)
			}
			p.work[home].stream(name)
			continue
		}
		n, route := 1, func(string) int { return 0 }
		if p.splitting(name) {
			n, route = len(p.work), p.deviceWorker
		}
		target := home
		if n > 1 {
			target = 0 // the states come indexed by worker
		}
		out, err := window.RedistributeStream(parts, n, min(home, n-1), route)
		if err != nil {
			return fmt.Errorf("stream %q: %w", name, err)
		}
		for i, s := range out {
			w := p.work[target+i]
			if _, err := w.win.RestoreStream(s); err != nil {
				return fmt.Errorf("stream %q: %w", name, err)
			}
			st := w.stream(name)
			if n > 1 && target+i != home {
				w.win.SetNoSite(name)
				st.noSite = true
			}
		}
	}
	return nil
}

// alertWorker is the worker whose rules hold an alert key of stream.
func (p *Processor) alertWorker(stream string, k alert.KeyState) int {
	return p.outputWorker(p.workerIndex(stream), stream, k.DeviceID)
}

// workerIndex is the index of the stream's home worker.
func (p *Processor) workerIndex(stream string) int {
	return int(maphash.String(p.seed, stream) % uint64(len(p.work)))
}
