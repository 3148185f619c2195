package process

import (
	"maps"
	"slices"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Mode is how much the processor does live: the windowing and alerting
// cells of the degradation matrix (DESIGN §7, docs/OPERATIONS.md).
//
//	Full      every window size, every rule
//	Limited   windows of Options.LimitedSizes only (default 5m and 1h):
//	          the other sizes are still computed — the larger sizes are
//	          built from them, and their sums must group as always — but
//	          their results are held back, and the rules on them wait
//	          ("delayed"); event rules and rules on the kept sizes run
//	Minimal   no windowing; the critical event rules only
//
// What a degraded mode holds back is produced when the processor returns to
// a better one: it restarts from its newest checkpoint, which is never taken
// while degraded, and its replay — always in full — writes every output the
// log lacks, as after a crash. A degraded run's outputs are a subset of a
// full run's, byte for byte, so nothing is written twice or differently.
// Records the buffer removed in between are not there to be replayed.
type Mode int32

const (
	Full Mode = iota
	Limited
	Minimal
)

var modeNames = [...]string{"full", "limited", "minimal"}

func (m Mode) String() string {
	if m >= Full && m <= Minimal {
		return modeNames[m]
	}
	return "mode(?)"
}

// DefaultLimitedSizes are the window sizes computed live in Limited mode.
var DefaultLimitedSizes = []time.Duration{5 * time.Minute, time.Hour}

// What a degraded mode held back, as Options.OnDeferred reports it.
const (
	DeferredWindows = "windows_deferred" // window results held back (Limited); n windows
	Unwindowed      = "unwindowed"       // events not windowed (Minimal); n events
)

// kindMode switches a worker's mode; it travels with the records, so a
// worker changes mode at the same offset whatever its backlog.
const kindMode byte = 0xf3

// SetMode sets the mode live processing takes from the next record read.
// A better mode than the worst one sent to the workers since the processor
// started restarts it from its newest checkpoint; the restart runs in the
// background, and queries see the replayed state.
func (p *Processor) SetMode(m Mode) {
	p.modeMu.Lock()
	defer p.modeMu.Unlock()
	p.mode.Store(int32(m))
	p.restartIfNeededLocked()
}

// SetWorkers asks for n workers (the scaling triggers' action, at least
// 1): the processor restarts with them in the background, from the
// checkpoint it writes on stopping (while degraded, from its newest).
func (p *Processor) SetWorkers(n int) {
	p.modeMu.Lock()
	defer p.modeMu.Unlock()
	p.opts.Workers = max(n, 1)
	p.restartIfNeededLocked()
}

// Workers returns how many workers run, and how many are asked for.
func (p *Processor) Workers() (running, asked int) {
	p.modeMu.Lock()
	defer p.modeMu.Unlock()
	return p.running, p.opts.Workers
}

// Mode returns the mode in force and whether a restart is under way (a
// replay recomputing what a degraded mode held back, if it held any).
func (p *Processor) Mode() (m Mode, restarting bool) {
	p.modeMu.Lock()
	defer p.modeMu.Unlock()
	return Mode(p.mode.Load()), p.restarting
}

// restartIfNeededLocked starts a restart if the workers asked for are not
// those running, or the mode is better than the worst sent in this run.
// Called with modeMu held.
func (p *Processor) restartIfNeededLocked() {
	if !p.started || p.restarting {
		return // the start, or the restart under way, checks again when done
	}
	if p.opts.Workers == p.running && Mode(p.mode.Load()) >= p.worstSent && !p.splitChangedLocked() {
		return
	}
	p.restarting = true
	go p.restart()
}

// restart stops the processor and starts it again from its newest
// checkpoint, with the workers asked for: the replay recomputes what a
// degraded mode held back.
func (p *Processor) restart() {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	if p.closed {
		p.modeMu.Lock()
		p.restarting = false
		p.modeMu.Unlock()
		return
	}
	start := time.Now()
	p.modeMu.Lock()
	workers, recompute := p.opts.Workers, p.dirty.Load()
	p.modeMu.Unlock()
	p.opts.Logger.Info("processor restarting", "recompute", recompute, "workers", workers)
	p.stop()
	p.modeMu.Lock()
	p.splitRun, p.splitAllRun = maps.Clone(p.wantSplit), p.wantSplitAll // the run is over: its goroutines read them
	p.modeMu.Unlock()
	p.workMu.Lock()
	p.restored, p.fromCheckpoint, p.start = false, false, 0
	p.out = make(chan outMsg, 64)
	p.ckpt = make(chan *Checkpoint, 1)
	err := p.newWorkersOf(workers)
	if err == nil {
		p.Restore()
	}
	p.workMu.Unlock()
	if err != nil {
		p.opts.Logger.Error("processor cannot restart; window results held back stay missing until the node restarts", "err", err)
		p.modeMu.Lock()
		p.restarting = false
		p.modeMu.Unlock()
		return
	}
	p.Start()
	p.opts.Logger.Info("processor restarted", "workers", workers, "from", max(p.start, p.log.FirstOffset()),
		"replaying_to", p.replayEnd, "took", time.Since(start).Round(time.Millisecond))
	p.modeMu.Lock()
	p.restarting = false
	p.restartIfNeededLocked() // asked for again while it ran
	p.modeMu.Unlock()
}

// keeps says whether the worker's mode emits window results of size.
func (w *worker) keeps(size time.Duration) bool {
	return w.mode == Full || (w.mode == Limited && slices.Contains(w.p.limitedSizes, size))
}

// deferEvent handles an event in Minimal mode: the critical event rules
// only; it reports whether it did (else the caller handles it in full).
func (w *worker) deferEvent(it item) bool {
	if w.mode != Minimal || !w.live {
		return false
	}
	for _, a := range w.rules.OnEventOf(alert.Critical, it.stream, it.device, it.ts, it.value) {
		w.emitAlert(a)
	}
	w.deferred(Unwindowed, it.stream)
	return true
}

// deferred counts one output or event held back, for Options.OnDeferred.
func (w *worker) deferred(what, stream string) {
	if w.held == nil {
		w.held = map[[2]string]uint64{}
	}
	w.held[[2]string{what, stream}]++
}

// reportDeferred hands the counts of the last batch to Options.OnDeferred.
func (w *worker) reportDeferred() {
	if len(w.held) == 0 {
		return
	}
	if f := w.p.opts.OnDeferred; f != nil {
		for k, n := range w.held {
			f(k[0], k[1], n)
		}
	}
	clear(w.held)
}

// limitedSizesOf returns the sizes of the engine kept in Limited mode.
func limitedSizesOf(o Options) []time.Duration {
	want := o.LimitedSizes
	if want == nil {
		want = DefaultLimitedSizes
	}
	sizes := o.Window.Sizes
	if len(sizes) == 0 {
		sizes = window.DefaultSizes
	}
	var out []time.Duration
	for _, s := range sizes {
		if slices.Contains(want, s) {
			out = append(out, s)
		}
	}
	return out
}
