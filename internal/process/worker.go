package process

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Item kinds beyond the record types.
const (
	kindReplayDone byte = 0xf0 // every record written before this start has been routed
	kindPosition   byte = 0xf1 // the reader has read everything below off
	kindCheckpoint byte = 0xf2 // take a checkpoint of everything below off
)

// outMsg is what a worker hands the writer: outputs to append, or its part of
// a checkpoint, which comes after every output produced before it.
type outMsg struct {
	outs []store.Output
	snap *workerSnap
}

// workerSnap is one worker's state for the checkpoint of off.
type workerSnap struct {
	off     uint64
	worker  int
	sent    time.Time // when the reader sent the barrier
	streams [][]byte
	alerts  alert.EngineState
}

// item is one record for a worker, already decoded.
type item struct {
	off    uint64
	kind   byte
	stream string
	device string
	ts     int64 // event time; for a watermark record, the watermark; for a window or alert record, its end or latest time
	value  float64
	id     string // window or alert record: its output key
	raw    []byte // window or alert record while replaying: the record as stored
	split  bool   // an event of a split stream whose site-wide windows are another worker's
	adv    bool   // advance the stream's watermark to wm before the event (split.go)
	wm     int64
}

// worker owns the windows and alert state of the streams hashed to it.
type worker struct {
	p  *Processor
	id int
	in chan []item

	// mu guards everything below; held while a batch is processed, and by
	// queries.
	mu        sync.Mutex
	win       *window.Engine
	rules     *alert.Engine
	live      bool   // false while replaying records written before this start
	processed uint64 // every record below this has been handled
	streams   map[string]*streamState
	outs      []store.Output // produced by the current item, to be flushed
	pending   map[string]int // replay: output key → index in pendingOuts
	pendOuts  []store.Output // replay: outputs not yet matched with a record
	pendKeys  []string       // replay: key of each pendOuts entry ("" once matched)
	// early holds the records of the previous run met before this run
	// produced them, by output key (see emit).
	early     map[string]item
	late      []uint64             // late offsets not yet written
	batchMono time.Duration        // monotonic clock when the current batch started
	mode      Mode                 // live: what the degradation level lets it do (mode.go)
	held      map[[2]string]uint64 // what the mode held back in this batch, for OnDeferred

	// Spilled window state (spill.go).
	spilled      map[string]*spilledStream
	spill        *spillFile     // nil until the first spill
	spillBuf     []byte         // encoding scratch
	sketchBuf    []byte         // onClose's sketch encoding scratch
	scratch      *window.Engine // for reading a spilled stream without loading it
	spillItems   int            // items since the last forced pass (Options.spillEvery)
	spillFailing bool           // the last spill failed (logged once)
}

// streamState is what a worker remembers of one stream for idle timeouts.
type streamState struct {
	lastEvent   time.Duration // monotonic clock at the last event processed live
	requestedWM int64         // highest watermark asked for by an idle timeout
	noSite      bool          // part of a split stream, its site-wide windows another worker's
	touched     bool          // had an item since the last spill pass
}

func newWorker(p *Processor, id int) (*worker, error) {
	w := &worker{p: p, id: id, in: make(chan []item, 16), streams: map[string]*streamState{}, pending: map[string]int{}, early: map[string]item{},
		spilled: map[string]*spilledStream{}}
	wo := p.opts.Window
	wo.OnClose = w.onClose
	var err error
	if w.win, err = window.New(wo); err != nil {
		return nil, err
	}
	if w.rules, err = alert.NewEngine(p.opts.Rules); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *worker) run() {
	tick := time.NewTicker(max(w.p.opts.IdleTimeout/10, 100*time.Millisecond))
	defer tick.Stop()
	pacing := w.p.opts.Pacer.Worker() // the latency trigger's action
	for {
		select {
		case batch, ok := <-w.in:
			if !ok {
				w.flush()
				w.closeSpill()
				return
			}
			pacing.Start()
			w.mu.Lock()
			w.batchMono = w.p.steady.Mono() // one clock read a batch, not an event
			for _, it := range batch {
				if it.kind == kindCheckpoint {
					w.mu.Unlock()
					w.flush()
					w.p.out <- outMsg{snap: w.snapshot(it.off, time.Unix(0, it.ts))}
					w.mu.Lock()
					continue
				}
				w.handle(it)
				w.forcedSpillTick()
			}
			w.reportDeferred()
			w.mu.Unlock()
			w.p.doneWith(batch)
			w.flush()
			pacing.Pace(context.Background()) // each rest is bounded (internal/pace)
		case <-tick.C:
			w.checkIdle()
			w.mu.Lock()
			w.spillTick()
			w.mu.Unlock()
		}
	}
}

func (w *worker) handle(it item) {
	switch it.kind {
	case event.TypeEvent:
		w.load(it.stream)
		if it.split {
			if st := w.stream(it.stream); !st.noSite {
				w.win.SetNoSite(it.stream)
				st.noSite = true
			}
		}
		if it.adv && (w.mode != Minimal || !w.live) {
			w.advance(it.stream, it.wm)
		}
		if w.deferEvent(it) {
			break
		}
		st := w.stream(it.stream)
		if w.live {
			st.lastEvent = w.batchMono
		}
		if w.win.Add(it.stream, it.device, it.ts, it.value) {
			w.late = append(w.late, it.off)
			w.p.opts.Metrics.Late.WithLabelValues(it.stream).Inc()
		}
		for _, a := range w.rules.OnEvent(it.stream, it.device, it.ts, it.value) {
			w.emitAlert(a)
		}
		w.p.opts.Metrics.Events.Inc()
	case event.TypeWatermark:
		w.stream(it.stream)
		if w.mode == Minimal && w.live {
			break // the windows are not fed: closing them would write partial results
		}
		w.advance(it.stream, it.ts)
	case event.TypeWindow, event.TypeAlert:
		// Replay: the previous run wrote this output already. It must be
		// what this run produced, byte for byte.
		if i, ok := w.pending[it.id]; ok {
			delete(w.pending, it.id)
			w.verify(it, w.pendOuts[i])
			w.pendKeys[i], w.pendOuts[i] = "", store.Output{}
			w.compactPending()
		} else {
			w.early[it.id] = it
		}
	case kindReplayDone:
		w.finishReplay()
		return
	case kindMode:
		w.mode = Mode(it.ts)
		return
	case kindSiteOnly: // split.go
		st := w.stream(it.stream)
		if w.mode == Minimal && w.live {
			break // not windowed; counted by the device's worker
		}
		if w.live {
			st.lastEvent = w.batchMono
		}
		w.load(it.stream)
		w.win.AddSite(it.stream, it.ts, it.value)
	case kindAdvance: // split.go
		w.stream(it.stream)
		if w.mode == Minimal && w.live {
			break
		}
		w.advance(it.stream, it.ts)
	case kindPosition:
	}
	w.processed = max(w.processed, it.off+1)
}

// verify compares a replayed output with the record found in the log.
func (w *worker) verify(it item, o store.Output) {
	var again []byte
	switch {
	case o.Window != nil:
		again = o.Window.AppendBinary(nil)
	case o.Alert != nil:
		again = o.Alert.AppendBinary(nil)
	}
	if bytes.Equal(again, it.raw) {
		w.p.verified.Add(1)
		return
	}
	if w.p.mismatches.Add(1) <= 10 {
		w.p.opts.Logger.Error("replay produced a different result than the log holds", "offset", it.off, "id", it.id)
	}
}

func (w *worker) stream(name string) *streamState {
	st, ok := w.streams[name]
	if !ok {
		st = &streamState{}
		w.streams[name] = st
	}
	st.touched = true
	return st
}

// streamList returns the worker's streams, or just the one named.
func (w *worker) streamList(name string) []string {
	if name != "" {
		if _, ok := w.streams[name]; ok {
			return []string{name}
		}
		return nil
	}
	out := make([]string, 0, len(w.streams))
	for s := range w.streams {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// onClose receives every closed window from the engine.
func (w *worker) onClose(r window.Result) {
	if w.live && !w.keeps(r.Size) {
		w.deferred(DeferredWindows, r.Stream) // written by the replay on the step down (mode.go)
		return
	}
	rec := &event.WindowRecord{
		Stream: r.Stream, DeviceID: r.DeviceID, SizeMS: r.Size.Milliseconds(), Start: r.Start,
		Count: r.Count, Sum: r.Sum, Min: r.Min, Max: r.Max, Last: r.Last, LastTS: r.LastTS,
		P50: r.P50, P95: r.P95, P99: r.P99,
	}
	if r.Overflow {
		rec.Overflow, rec.OverflowMean = true, r.Mean
	}
	if r.Sketch != nil {
		// Encoded in scratch and copied at its length: a replay holds a
		// burst of closing windows' records until it meets them in the log
		// (emit), and MarshalBinary's room for the sketch's whole bucket range
		// would be most of each.
		w.sketchBuf = r.Sketch.AppendBinary(w.sketchBuf[:0])
		rec.Sketch = bytes.Clone(w.sketchBuf)
	}
	w.emit(rec.ID(), store.Output{Window: rec})
	for _, a := range w.rules.OnWindow(alert.WindowInput{
		Stream: r.Stream, DeviceID: r.DeviceID, Size: r.Size, End: r.End, Count: r.Count,
		Sum: r.Sum, Min: r.Min, Max: r.Max, Mean: r.Mean, Last: r.Last, P50: r.P50, P95: r.P95, P99: r.P99,
	}) {
		w.emitAlert(a)
	}
}

func (w *worker) emitAlert(a alert.Alert) {
	w.p.recordAlert(a)
	rec := &event.AlertRecord{
		Rule: a.Rule, Severity: string(a.Severity), Firing: a.State == alert.Firing, Stream: a.Stream,
		DeviceID: a.DeviceID, Value: a.Value, Threshold: a.Threshold, FiredAt: a.FiredAt, ResolvedAt: a.ResolvedAt,
	}
	w.emit(alertKey(rec.ID(), rec.Firing), store.Output{Alert: rec})
}

// emit queues an output: live, to be written; while replaying, to be matched
// against the records the previous run wrote.
//
// A record of the previous run can also come before this run produces it:
// a split stream's device windows close when the device's worker is next
// advanced, with the next event of the stream it is given (split.go), and
// which events those are depends on how this run spreads the devices, not
// on the log alone — so the window may close later than it did, even after
// the replay. Such records wait in early, and the output that meets one is
// checked against it and not written again. An early record whose stream's
// watermark has passed its time without it being produced never will be
// (its window closed before the checkpoint), and is dropped (pruneEarly).
func (w *worker) emit(key string, o store.Output) {
	if it, ok := w.early[key]; ok {
		delete(w.early, key)
		w.verify(it, o)
		return
	}
	if w.live {
		w.outs = append(w.outs, o)
		return
	}
	w.pending[key] = len(w.pendOuts)
	w.pendOuts = append(w.pendOuts, o)
	w.pendKeys = append(w.pendKeys, key)
}

// compactPending drops the matched outputs from pendOuts once they are most
// of it, so that a replay holds only the outputs it produced and has not yet
// met in the log (at most a burst of closing windows), not every output since
// the checkpoint.
func (w *worker) compactPending() {
	if len(w.pendOuts) < 1024 || len(w.pending)*2 > len(w.pendOuts) {
		return
	}
	n := 0
	for i, key := range w.pendKeys {
		if key == "" {
			continue
		}
		w.pendOuts[n], w.pendKeys[n] = w.pendOuts[i], key
		w.pending[key] = n
		n++
	}
	clear(w.pendOuts[n:])
	clear(w.pendKeys[n:])
	w.pendOuts, w.pendKeys = w.pendOuts[:n], w.pendKeys[:n]
}

// pruneEarly drops the early records that can no longer be met: those of
// a stream whose watermark here has passed their time.
func (w *worker) pruneEarly() {
	for key, it := range w.early {
		if wm, ok := w.win.Watermark(it.stream); ok && wm >= it.ts {
			delete(w.early, key)
		}
	}
}

// finishReplay writes what the previous run produced but did not get to
// write, and switches to live processing.
func (w *worker) finishReplay() {
	for i, o := range w.pendOuts {
		if w.pendKeys[i] != "" {
			w.outs = append(w.outs, o)
		}
	}
	w.p.lateMu.Lock()
	late := w.late[:0]
	for _, off := range w.late {
		if _, seen := w.p.seenLate[off]; !seen {
			late = append(late, off)
		}
	}
	w.p.lateMu.Unlock()
	w.late = late
	w.pending, w.pendOuts, w.pendKeys = map[string]int{}, nil, nil
	w.pruneEarly()
	w.live = true
	now := w.p.steady.Mono()
	for _, st := range w.streams {
		st.lastEvent = now // idle time counts from now, not from before the restart
	}
}

// flush hands the outputs of the last batch to the writer.
func (w *worker) flush() {
	w.mu.Lock()
	outs := w.outs
	w.outs = nil
	if w.live && len(w.late) > 0 {
		slices.Sort(w.late)
		outs = append(outs, store.Output{Late: slices.Compact(w.late)})
		w.late = nil
	}
	w.mu.Unlock()
	if len(outs) > 0 {
		w.p.out <- outMsg{outs: outs}
	}
}

// snapshot captures the worker's state: its streams' windows and its alert
// rules' keys.
func (w *worker) snapshot(off uint64, sent time.Time) *workerSnap {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := &workerSnap{off: off, worker: w.id, sent: sent, alerts: w.rules.State()}
	names := append(w.win.Streams(), slices.Collect(maps.Keys(w.spilled))...)
	slices.Sort(names)
	for _, name := range names {
		s.streams = append(s.streams, w.streamState(name))
	}
	return s
}

// checkIdle closes the windows of streams quiet for the idle timeout, through
// a watermark record, so that replays close them at the same place. The quiet
// time is monotonic and the watermark the steady wall clock's: a jump of the
// wall clock neither closes a window early nor holds one back.
func (w *worker) checkIdle() {
	mono, now := w.p.steady.Mono(), w.p.steady.Now()
	lateness := w.p.lateness
	var outs []store.Output
	w.mu.Lock()
	if len(w.early) > 0 && w.live {
		w.pruneEarly()
	}
	if w.live && w.mode != Minimal {
		for name, st := range w.streams {
			if st.noSite || mono-st.lastEvent < w.p.opts.IdleTimeout {
				// A split stream's idle timeout is its home's, which sees all of it.
				continue
			}
			target := now.Add(-lateness).UnixMilli()
			if cur, ok := w.watermark(name); ok && target <= cur || target <= st.requestedWM {
				continue
			}
			if !w.hasWindowEndingBy(name, target) {
				continue
			}
			st.requestedWM = target
			outs = append(outs, store.Output{Watermark: &event.WatermarkRecord{Stream: name, Watermark: target}})
		}
	}
	w.mu.Unlock()
	if len(outs) > 0 {
		w.p.out <- outMsg{outs: outs}
	}
}

// hasWindowEndingBy reports whether the stream has an open window that a
// watermark of target would close.
func (w *worker) hasWindowEndingBy(stream string, target int64) bool {
	end, ok := w.earliestEnd(stream)
	return ok && end <= target
}
