// Package process turns the log into answers: it reads every record in offset
// order, feeds events to windowing and alert rules on worker goroutines (each
// owning whole streams), and writes what they produce — window results, alerts,
// late marks — back to the log as records. Ingest never waits for it; the
// notifiers read the alerts from the log (alert.Dispatcher).
//
// Determinism is what makes it crash-safe. Window closes, late decisions and
// alerts are a function of the log's contents in offset order: the watermark
// comes from the events before a record, and a quiet stream's wall-clock idle
// timeout takes effect through a watermark record written to the log, so it
// lands at the same place on every replay. After a restart the processor replays
// the log; what it produces for the part written before the restart is matched
// against the records already there and only the missing ones are written. No
// result is written twice and none is lost. Checkpoints shorten the replay
// without changing its outcome: every 30 s, and at a clean shutdown, the reader
// sends a barrier at offset C through every worker; each hands the writer its
// outputs and then its state, and once every worker's outputs before the
// barrier are durable the writer saves the state as the checkpoint of C
// (docs/format/checkpoint.md). A restart loads the newest valid one and
// replays from C.
package process

import (
	"context"
	"errors"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pace"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Options configure a Processor. Zero fields take the defaults.
type Options struct {
	Window  window.Options // OnClose is set by the processor
	Rules   []alert.Rule
	Workers int // default GOMAXPROCS
	// IdleTimeout: a stream quiet this long has its windows closed up to the
	// wall clock less the allowed lateness; default 1m. Both are read
	// without jumps (clock.Steady): a step of the wall clock closes no
	// window early and holds none back.
	IdleTimeout time.Duration
	// FlushInterval bounds how long an output waits to be batched; default 20ms.
	FlushInterval time.Duration
	Checkpoints   CheckpointOptions
	Logger        *slog.Logger
	Metrics       *Metrics
	// LimitedSizes are the window sizes whose results Limited mode writes
	// live (mode.go); default DefaultLimitedSizes, nil for the default.
	LimitedSizes []time.Duration
	// OnDeferred, if set, is told what a degraded mode holds back live, by
	// stream: DeferredWindows (n window results) or Unwindowed (n events).
	// Called from the workers.
	OnDeferred func(what, stream string, n uint64)
	// Split names streams split across the workers from the start (split.go);
	// SplitAll splits every stream. SetSplit changes them.
	Split    []string
	SplitAll bool
	// Pacer, if set, paces the reader while on (the latency trigger's
	// action, internal/pace): the workers get what the reader sends.
	Pacer *pace.Pacer
	// SpillDir is where the workers spill window state while SetSpill is on
	// (spill.go); "" turns spilling off. Prepare deletes the spill files in
	// it: they are a cache.
	SpillDir string
	// spillEvery, if positive, makes each worker run a spill tick after
	// every spillEvery items (tests).
	spillEvery int
	now        func() time.Time
	clock      clock.Clock // default clock.System; now defaults to its wall clock
}

// CheckpointOptions configure checkpoints; an empty Dir turns them off.
type CheckpointOptions struct {
	FS       vfs.FS // default vfs.OS
	Dir      string
	Interval time.Duration // default 30s
	Keep     int           // default 3
}

func (o Options) withDefaults() Options {
	if o.Checkpoints.Interval <= 0 {
		o.Checkpoints.Interval = 30 * time.Second
	}
	if o.Checkpoints.FS == nil {
		o.Checkpoints.FS = vfs.OS
	}
	if o.Checkpoints.Keep <= 0 {
		o.Checkpoints.Keep = 3
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = time.Minute
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = 20 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.clock == nil {
		o.clock = clock.System
	}
	if o.now == nil {
		o.now = o.clock.Now
	}
	return o
}

// Processor is the running stream processor.
type Processor struct {
	opts   Options
	store  *store.Store
	fed    *store.Fed // the events the store appended, decoded: the live end takes them from here
	log    buffer.Engine
	seed   maphash.Seed
	work   []*worker
	out    chan outMsg
	free   chan []item      // batches the workers are done with, for the reader to fill again
	ckpt   chan *Checkpoint // to the checkpoint writer
	cancel context.CancelFunc
	wg     sync.WaitGroup

	restored       bool          // Restore ran
	fromCheckpoint bool          // start is a checkpoint's offset
	start          uint64        // the offset processing starts from: a checkpoint's, or 0
	replayEnd      uint64        // records below it were written before this start
	lateness       time.Duration // the windows' effective allowed lateness
	steady         *clock.Steady // the wall clock without its jumps, for idle timeouts
	limitedSizes   []time.Duration

	// Degraded modes (mode.go). The reader sends the mode to the workers
	// with the records; dirty says a degraded mode was sent since this run
	// started, so no checkpoint may be taken and a better mode restarts.
	mode       atomic.Int32
	dirty      atomic.Bool
	spillOn    atomic.Bool // the workers spill window state (spill.go)
	modeMu     sync.Mutex  // orders SetMode with the reader's sending of a mode
	restarting bool        // guarded by modeMu
	started    bool        // guarded by modeMu: Start ran
	running    int         // guarded by modeMu: the workers of this run
	worstSent  Mode        // guarded by modeMu: the worst mode sent in this run

	// Split streams (split.go): asked for (guarded by modeMu), and this
	// run's, set before its restore and fixed while it runs.
	wantSplit    map[string]bool
	wantSplitAll bool
	splitRun     map[string]bool
	splitAllRun  bool
	runMu        sync.Mutex // serialises restart and Close
	closed       bool       // guarded by runMu
	workMu       sync.RWMutex

	lateMu   sync.Mutex
	seenLate map[uint64]struct{} // guarded by lateMu; late marks found while replaying

	checkpointed atomic.Uint64 // offset of the newest checkpoint on disk, +1 (0: none)
	fedHits      atomic.Uint64 // events the reader took from the store's Fed, counted when a run ends
	verified     atomic.Uint64 // replayed outputs equal to the record already in the log
	mismatches   atomic.Uint64 // replayed outputs that differ from it

	alertsMu sync.RWMutex
	alerts   map[string]alert.Alert // guarded by alertsMu; newest state of each alert
	alertIDs []string               // guarded by alertsMu; insertion order, for bounding
}

// maxAlertHistory bounds the alerts kept in memory for queries.
const maxAlertHistory = 10_000

// New prepares a processor over a store.
func New(s *store.Store, opts Options) (*Processor, error) {
	p, err := Prepare(s.Log(), opts)
	if err != nil {
		return nil, err
	}
	p.Attach(s)
	return p, nil
}

// Prepare builds a processor over the log before its store is open, so that
// Restore (the checkpoint load) can run while the store rebuilds its index.
// Attach must give it the store before Start.
func Prepare(l buffer.Engine, opts Options) (*Processor, error) {
	opts = opts.withDefaults()
	if err := alert.ValidateRules(opts.Rules); err != nil {
		return nil, err
	}
	p := &Processor{
		opts:     opts,
		log:      l,
		steady:   clock.NewSteady(opts.clock),
		seed:     maphash.MakeSeed(),
		out:      make(chan outMsg, 64),
		free:     make(chan []item, 64),
		ckpt:     make(chan *Checkpoint, 1),
		seenLate: map[uint64]struct{}{},
		alerts:   map[string]alert.Alert{},
	}
	p.limitedSizes = limitedSizesOf(opts)
	p.wantSplit, p.wantSplitAll = map[string]bool{}, opts.SplitAll
	for _, s := range opts.Split {
		p.wantSplit[s] = true
	}
	p.splitRun, p.splitAllRun = maps.Clone(p.wantSplit), p.wantSplitAll
	switch p.lateness = opts.Window.AllowedLateness; p.lateness {
	case 0:
		p.lateness = window.DefaultAllowedLateness
	case window.NoLateness:
		p.lateness = 0
	}
	if opts.SpillDir != "" {
		if err := clearSpillDir(opts.SpillDir); err != nil {
			return nil, err
		}
	}
	if err := p.newWorkersOf(opts.Workers); err != nil {
		return nil, err
	}
	return p, nil
}

// Attach gives a prepared processor its store (over the same log).
func (p *Processor) Attach(s *store.Store) {
	p.store = s
	p.fed = s.Fed()
}

// Restore loads the newest valid checkpoint, if checkpoints are on; Start
// does it if it was not done before.
func (p *Processor) Restore() {
	if p.restored || p.opts.Checkpoints.Dir == "" {
		return
	}
	p.restored = true
	p.restore()
}

func (p *Processor) newWorkers() error { return p.newWorkersOf(len(p.work)) }

// newWorkersOf replaces the workers with n fresh ones.
func (p *Processor) newWorkersOf(n int) error {
	p.work = nil
	for i := range n {
		w, err := newWorker(p, i)
		if err != nil {
			return err
		}
		p.work = append(p.work, w)
	}
	return nil
}

// Start loads the newest valid checkpoint, replays the log from its offset (or
// from the start without one) and then follows the log, until Close.
func (p *Processor) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.Restore()
	p.modeMu.Lock()
	p.started, p.running, p.worstSent = true, len(p.work), Full
	p.dirty.Store(false)
	p.modeMu.Unlock()
	p.replayEnd = p.log.DurableOffset()
	p.opts.Logger.Info("processor replaying log", "from", max(p.start, p.log.FirstOffset()), "to", p.replayEnd,
		"workers", len(p.work))
	if p.opts.Checkpoints.Dir != "" {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.writeCheckpoints() }()
	}
	var producers sync.WaitGroup
	producers.Add(1 + len(p.work))
	go func() { defer producers.Done(); p.read(ctx) }()
	for _, w := range p.work {
		go func() { defer producers.Done(); w.run() }()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(p.ckpt)
		go func() { producers.Wait(); close(p.out) }()
		p.write()
	}()
}

// Close stops reading, lets the workers finish what they hold and writes their
// outputs. Outputs not written are produced again by the next replay.
func (p *Processor) Close() error {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	p.closed = true
	p.stop()
	return nil
}

// stop ends the run started last and waits for it.
func (p *Processor) stop() {
	if p.cancel != nil {
		p.cancel()
		p.wg.Wait()
	}
}

func (p *Processor) workerFor(stream string) *worker {
	return p.work[maphash.String(p.seed, stream)%uint64(len(p.work))]
}

// read is the one goroutine reading the log: it routes each record to the
// worker owning its stream, in batches.
func (p *Processor) read(ctx context.Context) {
	r := p.log.NewReader(p.start)
	defer r.Close()
	batches := make([][]item, len(p.work))
	// send hands the batches to the workers; it gives up when ctx is done,
	// unless final.
	pacing := p.opts.Pacer.Worker() // the latency trigger's action
	send := func(final bool) bool {
		for i, b := range batches {
			if len(b) == 0 {
				continue
			}
			if final {
				p.work[i].in <- b
			} else {
				select {
				case p.work[i].in <- b:
				default:
					pacing.Idle() // waiting for a worker is not the reader's work
					select {
					case p.work[i].in <- b:
					case <-ctx.Done():
						return false
					}
					pacing.Start()
				}
			}
			batches[i] = p.newBatch()
		}
		return true
	}
	flush := func() bool { return send(false) }
	names := [2]*interner{newInterner(), newInterner()} // streams, devices
	fed := newFedView(p.fed)
	defer func() { p.fedHits.Add(fed.hits) }()
	var route router
	sp := p.newSplitter()
	replaying := true
	sent := Full // the mode the workers have
	next := p.start
	lastCheckpoint, checkpointed := time.Now(), p.start
	// checkpoint sends the barrier for a checkpoint of next through every
	// worker, if the log has grown since the last one.
	checkpoint := func(final bool) bool {
		if p.opts.Checkpoints.Dir == "" || replaying || next == checkpointed || p.dirty.Load() {
			return true
		}
		sp.level(batches) // a split stream's parts at one watermark
		if !send(final) {
			return false
		}
		// Once one worker has the barrier every worker gets it, waiting if
		// need be (workers drain their input until it is closed): a barrier
		// half sent would leave the writer a checkpoint without some
		// workers' state.
		ts := time.Now().UnixNano()
		for i, w := range p.work {
			barrier := []item{{kind: kindCheckpoint, off: next, ts: ts}}
			if final || i > 0 {
				w.in <- barrier
				continue
			}
			select {
			case w.in <- barrier:
			case <-ctx.Done():
				return false
			}
		}
		lastCheckpoint, checkpointed = time.Now(), next
		return true
	}
	clean := false
	defer func() {
		if clean {
			checkpoint(true) // a clean shutdown: the next start replays nothing
		}
		for _, w := range p.work {
			close(w.in)
		}
	}()
	for n := 0; ; n++ {
		if ctx.Err() != nil {
			clean = true
			return
		}
		if n%4096 == 0 && time.Since(lastCheckpoint) >= p.opts.Checkpoints.Interval && !checkpoint(false) {
			clean = true
			return
		}
		if n%256 == 0 && pacing != nil && !pacing.Pace(ctx) {
			clean = true
			return
		}
		if replaying && next >= p.replayEnd {
			replaying = false
			if !flush() {
				return
			}
			for _, w := range p.work {
				select {
				case w.in <- []item{{kind: kindReplayDone}}:
				case <-ctx.Done():
					return
				}
			}
			p.opts.Logger.Info("processor caught up with the log", "offset", next)
		}
		off, payload, err := r.Next()
		if errors.Is(err, io.EOF) {
			if !flush() {
				clean = true
				return
			}
			if time.Since(lastCheckpoint) >= p.opts.Checkpoints.Interval && !checkpoint(false) {
				clean = true
				return
			}
			if next > 0 {
				for _, w := range p.work {
					select {
					case w.in <- []item{{kind: kindPosition, off: next - 1}}:
					case <-ctx.Done():
						return
					}
				}
			}
			pacing.Idle()
			wctx, cancel := context.WithTimeout(ctx, p.opts.Checkpoints.Interval)
			err := p.log.WaitDurable(wctx, next+1)
			cancel()
			if ctx.Err() != nil {
				clean = true
				return
			}
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				p.opts.Logger.Error("processor stopped: log unavailable", "err", err)
				return
			}
			continue
		}
		if err != nil {
			// Damage found while reading: it was not there when the log was
			// opened. Stop rather than skip; the next open quarantines it.
			p.opts.Logger.Error("processor stopped at a damaged record", "err", err)
			return
		}
		if !replaying && max(Mode(p.mode.Load()), sent) != sent {
			// Only ever worse within a run: the engine a degraded mode
			// left behind may lack events (minimal feeds none), and what
			// was held back is the replay's. A better mode waits for the
			// restart SetMode started.
			p.modeMu.Lock()
			sent = max(Mode(p.mode.Load()), sent)
			if sent != Full {
				p.dirty.Store(true)
			}
			p.worstSent = max(p.worstSent, sent)
			p.modeMu.Unlock()
			for i := range batches {
				batches[i] = append(batches[i], item{kind: kindMode, ts: int64(sent)})
			}
		}
		next = off + 1
		it, ok := p.decode(off, payload, names, fed, off < p.replayEnd)
		if !ok {
			continue
		}
		i := int(route.worker(p, it.stream))
		if p.splitting(it.stream) {
			switch it.kind {
			case event.TypeEvent:
				dw := sp.event(batches, i, it)
				if (len(batches[dw]) >= batchLen || len(batches[i]) >= batchLen) && !flush() {
					return
				}
				continue
			case event.TypeWatermark:
				sp.watermark(batches, it)
				continue
			default:
				i = p.outputWorker(i, it.stream, it.device)
			}
		}
		batches[i] = append(batches[i], it)
		if len(batches[i]) >= batchLen && !flush() {
			return
		}
	}
}

// batchLen is how many items the reader puts in a batch before sending it.
const batchLen = 256

// newBatch returns an empty batch, one a worker is done with if there is one.
func (p *Processor) newBatch() []item {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]item, 0, batchLen)
	}
}

// doneWith takes back a batch a worker has handled, cleared, unless enough
// are waiting.
func (p *Processor) doneWith(b []item) {
	if cap(b) < batchLen {
		return
	}
	clear(b)
	select {
	case p.free <- b[:0]:
	default:
	}
}

// decode turns a record into a work item; ok is false for records no worker
// needs.
func (p *Processor) decode(off uint64, payload []byte, names [2]*interner, fed *fedView, replay bool) (item, bool) {
	it := item{off: off, kind: event.Type(payload)}
	switch it.kind {
	case event.TypeEvent:
		if !replay {
			if e, ok := fed.get(off); ok {
				it.stream, it.device, it.ts, it.value = e.Stream, e.Device, e.TS, e.Value
				return it, true
			}
		}
		v, ok := event.Peek(payload)
		if !ok {
			return it, false
		}
		it.stream, it.device = names[0].get(v.Stream), names[1].get(v.DeviceID)
		it.ts, it.value = v.TS, v.Value
	case event.TypeWindow:
		if !replay {
			return it, false // live: the worker wrote it and knows
		}
		w, err := event.DecodeWindow(payload)
		if err != nil {
			return it, false
		}
		it.stream, it.device, it.id, it.raw = w.Stream, w.DeviceID, w.ID(), append([]byte(nil), payload...)
		it.ts = w.Start + w.SizeMS // its end
	case event.TypeAlert:
		if !replay {
			return it, false // live: the worker wrote it and knows
		}
		a, err := event.DecodeAlert(payload)
		if err != nil {
			return it, false
		}
		it.stream, it.device, it.id, it.raw = a.Stream, a.DeviceID, alertKey(a.ID(), a.Firing), append([]byte(nil), payload...)
		it.ts = max(a.FiredAt, a.ResolvedAt)
	case event.TypeWatermark:
		wm, err := event.DecodeWatermark(payload)
		if err != nil {
			return it, false
		}
		it.stream, it.ts = wm.Stream, wm.Watermark
	case event.TypeLate:
		if replay {
			if offs, err := event.DecodeLate(payload); err == nil {
				p.lateMu.Lock()
				for _, o := range offs {
					p.seenLate[o] = struct{}{}
				}
				p.lateMu.Unlock()
			}
		}
		return it, false
	default:
		return it, false
	}
	return it, true
}

func alertKey(id string, firing bool) string {
	if firing {
		return id + "#firing"
	}
	return id + "#resolved"
}

// write is the one goroutine appending outputs: it batches what the workers
// produce and appends it. It also assembles checkpoints from the workers'
// parts.
func (p *Processor) write() {
	var pending []store.Output
	snaps := map[uint64]map[int]*workerSnap{} // by offset, then worker
	lost := false                             // outputs were dropped: no checkpoint may cover them
	ticker := time.NewTicker(p.opts.FlushInterval)
	defer ticker.Stop()
	flush := func() bool {
		if len(pending) == 0 {
			return true
		}
		if _, err := p.store.AppendOutputs(pending); err != nil {
			// The log has failed; the outputs are produced again on replay.
			p.opts.Logger.Error("processor could not write outputs; no more checkpoints until a restart replays them",
				"records", len(pending), "err", err)
			pending = pending[:0]
			lost = true
			return false
		}
		for _, o := range pending {
			switch {
			case o.Window != nil:
				p.opts.Metrics.WindowsClosed.Inc()
			case o.Alert != nil:
				p.opts.Metrics.Alerts.WithLabelValues(o.Alert.Severity, stateOf(o.Alert)).Inc()
			}
		}
		pending = pending[:0]
		return true
	}
	for {
		select {
		case m, ok := <-p.out:
			if !ok {
				flush()
				return
			}
			if m.snap != nil {
				if snaps[m.snap.off] == nil {
					snaps[m.snap.off] = map[int]*workerSnap{}
				}
				snaps[m.snap.off][m.snap.worker] = m.snap
				if len(snaps[m.snap.off]) < len(p.work) {
					continue
				}
				parts := make([]*workerSnap, 0, len(p.work))
				for i := range p.work {
					parts = append(parts, snaps[m.snap.off][i])
				}
				delete(snaps, m.snap.off)
				// Every output produced before the barrier is in pending or
				// written: once it is durable, the state is a checkpoint.
				if flush() && !lost && p.log.Err() == nil {
					p.ckpt <- p.assemble(m.snap.off, parts)
				}
				continue
			}
			pending = append(pending, m.outs...)
			if len(pending) >= 1024 {
				flush()
			}
		case <-ticker.C:
			flush()
		}
	}
}

func stateOf(a *event.AlertRecord) string {
	if a.Firing {
		return string(alert.Firing)
	}
	return string(alert.Resolved)
}

// recordAlert keeps an alert's newest state for queries.
func (p *Processor) recordAlert(a alert.Alert) {
	p.alertsMu.Lock()
	defer p.alertsMu.Unlock()
	if _, ok := p.alerts[a.ID]; !ok {
		p.alertIDs = append(p.alertIDs, a.ID)
		if len(p.alertIDs) > maxAlertHistory {
			old := p.alertIDs[0]
			p.alertIDs = p.alertIDs[1:]
			if p.alerts[old].State != alert.Firing {
				delete(p.alerts, old)
			} else {
				p.alertIDs = append(p.alertIDs, old) // never forget a firing alert
			}
		}
	}
	p.alerts[a.ID] = a
}

// Alerts returns alerts matching state and severity ("" matches all), newest
// fired first.
func (p *Processor) Alerts(state, severity string) []alert.Alert {
	p.alertsMu.RLock()
	defer p.alertsMu.RUnlock()
	var out []alert.Alert
	for i := len(p.alertIDs) - 1; i >= 0; i-- {
		a := p.alerts[p.alertIDs[i]]
		if (state == "" || string(a.State) == state) && (severity == "" || string(a.Severity) == severity) {
			out = append(out, a)
		}
	}
	return out
}

// Open returns partial results of open windows; see window.Engine.Open.
func (p *Processor) Open(stream, device string, size time.Duration, from, to int64) []window.Result {
	p.workMu.RLock()
	defer p.workMu.RUnlock()
	var out []window.Result
	for _, w := range p.work {
		w.mu.Lock()
		for _, s := range w.streamList(stream) {
			w.engineOf(s, func(e *window.Engine) { out = append(out, e.Open(s, device, size, from, to)...) })
		}
		w.mu.Unlock()
	}
	return out
}

// OpenPartials returns the mergeable partials of open windows, selected as
// Open selects them, in no particular order; see window.Engine.OpenPartials.
func (p *Processor) OpenPartials(stream, device string, size time.Duration, from, to int64) []window.Partial {
	p.workMu.RLock()
	defer p.workMu.RUnlock()
	var out []window.Partial
	for _, w := range p.work {
		w.mu.Lock()
		for _, s := range w.streamList(stream) {
			w.engineOf(s, func(e *window.Engine) { out = append(out, e.OpenPartials(s, device, size, from, to)...) })
		}
		w.mu.Unlock()
	}
	return out
}

// Status describes the processor for /v1/status.
type Status struct {
	Replaying   bool              `json:"replaying"`
	Processed   uint64            `json:"processed_offset"`
	Lag         uint64            `json:"lag_records"`
	OpenWindows int               `json:"open_windows"`
	Late        map[string]uint64 `json:"late_events"`
	Firing      int               `json:"alerts_firing"`
	Workers     int               `json:"workers"`
	// SplitStreams are the streams split across the workers ("*": all).
	SplitStreams []string `json:"split_streams"`
	// ReplayVerified counts window results and alerts that a replay produced
	// again and found byte for byte equal to the record already in the log;
	// ReplayMismatches those that differed (0 unless processing is not
	// deterministic).
	ReplayVerified   uint64 `json:"replay_verified"`
	ReplayMismatches uint64 `json:"replay_mismatches"`
	// SpilledStreams counts the streams whose window state is spilled to
	// disk (the memory trigger's action, spill.go); OpenWindows includes
	// their windows.
	SpilledStreams int `json:"spilled_streams"`
}

// Status reports progress and state.
func (p *Processor) Status() Status {
	s := Status{Late: map[string]uint64{}}
	first := true
	p.workMu.RLock()
	defer p.workMu.RUnlock()
	for _, w := range p.work {
		w.mu.Lock()
		if first || w.processed < s.Processed {
			s.Processed = w.processed
		}
		first = false
		s.Replaying = s.Replaying || !w.live
		s.OpenWindows += w.openWindows()
		s.SpilledStreams += len(w.spilled)
		for st := range w.streams {
			if n := w.lateCount(st); n > 0 {
				s.Late[st] = n
			}
		}
		w.mu.Unlock()
	}
	s.Workers = len(p.work)
	if split, all := p.Split(); all {
		s.SplitStreams = []string{"*"}
	} else {
		s.SplitStreams = append([]string{}, split...)
	}
	if d := p.log.DurableOffset(); d > s.Processed {
		s.Lag = d - s.Processed
	}
	s.Firing = len(p.Alerts(string(alert.Firing), ""))
	s.ReplayVerified, s.ReplayMismatches = p.verified.Load(), p.mismatches.Load()
	return s
}

// router remembers the last stream routed: consecutive records of one stream
// are the common case and skip the hash.
type router struct {
	stream string
	i      uint64
	ok     bool
}

func (r *router) worker(p *Processor, stream string) uint64 {
	if !r.ok || stream != r.stream {
		r.stream, r.i, r.ok = stream, maphash.String(p.seed, stream)%uint64(len(p.work)), true
	}
	return r.i
}

// interner keeps one copy of each device and stream name.
type interner struct {
	m    map[string]string
	last string // the name returned last: names repeat from record to record
}

func newInterner() *interner { return &interner{m: map[string]string{}} }

func (in *interner) get(b []byte) string {
	if string(b) == in.last {
		return in.last
	}
	if s, ok := in.m[string(b)]; ok {
		in.last = s
		return s
	}
	if len(in.m) > 1<<20 {
		clear(in.m) // bound memory with unbounded device churn
	}
	s := string(b)
	in.m[s] = s
	in.last = s
	return s
}

// AdoptWallClock makes idle timeouts take the wall clock as it reads now,
// the jumps they ignored since the processor started (or last adopted it)
// included, if those add up to at least min; it returns how far they moved
// it. For when the wall clock is known good again: the cloud's clock agrees.
func (p *Processor) AdoptWallClock(min time.Duration) time.Duration {
	d := p.steady.Drift()
	if d.Abs() < min {
		return 0
	}
	p.steady.Rebase()
	return d
}
