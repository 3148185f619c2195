package node

import (
	"runtime"
	"slices"
	"time"

	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pressure"
	"github.com/holdfast-edge/holdfast/internal/process"
)

// The windowing and alerting cells of the degradation matrix are the
// processor's modes (internal/process, mode.go):
//
//	level               windowing            alerting
//	normal, degraded    all                  real time
//	limited             limited_windows      delayed: rules on the other
//	                    live (5m, 1h); the   sizes wait for their windows
//	                    others held back
//	minimal, emergency  none                 critical event rules only
//
// What is held back is written when the level steps down, by a replay from
// the processor's last checkpoint (none is taken while degraded), and
// counted meanwhile in the loss ledger as windows_deferred (window results)
// and unwindowed (events), so that the cloud knows what follows later.

// processMode is the processor mode of a level (the one actions follow).
func processMode(l degrade.Level) process.Mode {
	switch {
	case l >= degrade.Minimal:
		return process.Minimal
	case l == degrade.Limited:
		return process.Limited
	}
	return process.Full
}

// processDeferred accounts for what the processor's mode held back.
func (n *Node) processDeferred(what, stream string, count uint64) {
	reason := event.LossWindowsDeferred
	if what == process.Unwindowed {
		reason = event.LossUnwindowed
	}
	n.ledger.counted(reason, stream, count)
}

// applyProcessing sets the processor's mode for the level.
func (n *Node) applyProcessing(l degrade.Level) {
	if n.proc != nil {
		n.proc.SetMode(processMode(l))
	}
}

// processingCells fills the windowing and alerting cells of the row in
// force from the processor's mode; while it recomputes what a degraded mode
// held back, windowing reads "recomputing".
func (n *Node) processingCells(row *degrade.Features) {
	if n.proc == nil {
		return
	}
	m, recomputing := n.proc.Mode()
	f := degrade.Row(map[process.Mode]degrade.Level{
		process.Full: degrade.Normal, process.Limited: degrade.Limited, process.Minimal: degrade.Minimal,
	}[m])
	row.Windowing, row.Alerting = f.Windowing, f.Alerting
	if recomputing {
		row.Windowing = "recomputing"
	}
}

// applyWorkers is the action of the CPU and queue triggers: the processor
// runs windows.workers workers (one per CPU by default) while either is up,
// and one once the CPU trigger is down (the machine idle for its down time)
// with the queue not up. In between the count stays as it is. A change
// restarts the processor from a checkpoint it writes on stopping.
func (n *Node) applyWorkers(trig []degrade.TriggerStatus, now time.Time) {
	if n.proc == nil {
		return
	}
	most := n.cfg.Windows.Workers
	if most <= 0 {
		most = runtime.GOMAXPROCS(0)
	}
	state := map[string]string{}
	for _, t := range trig {
		state[t.Metric] = t.State
	}
	_, asked := n.proc.Workers()
	want := asked
	switch {
	case state["queue"] == degrade.Up || state["cpu"] == degrade.Up:
		want = most
	case state["cpu"] == degrade.Down && now.Sub(n.deg.scaledUp) >= n.cfg.Degradation.Triggers.CPU.DownFor:
		// Not within the CPU's down time of the last scale-up: a queue
		// drained by the added workers must not take them away at once.
		want = 1
	}
	if want > asked {
		n.deg.scaledUp = now
	}
	if want != asked {
		n.log.Info("processing workers scaled by the triggers", "from", asked, "to", want,
			"queue", state["queue"], "cpu", state["cpu"])
	}
	n.proc.SetWorkers(want)
}

// splitHold is how long a stream stays split after its last hot spot.
const splitHold = 5 * time.Minute

// splitMinWorkers is the fewest processing workers auto splitting needs.
const splitMinWorkers = 3

// splitMinGap is the least time between two changes of the split streams:
// each restarts the processor.
const splitMinGap = 30 * time.Second

// applySplit is the hot-spot mitigation of windows.split: auto, the
// processor splits across its workers every stream with a stream_skew or
// key_skew hot spot (internal/process/split.go), until splitHold after its
// last one. A key's windows stay one worker's — they need all of its events
// in order to be exact — so a hot key is mitigated by spreading the other
// devices of its stream, which leaves its worker to it.
//
// The split changes only below limited: the restart it takes would replay
// everything a degraded mode held back, adding to the load that raised the
// level.
//
// Only with at least splitMinWorkers workers: the processor's one reader
// decodes and routes every record, and with fewer the workers keep up with
// it, split or not (docs/BENCHMARKS.md, "Hot-stream splitting": on two
// cores splitting costs 10–20 % of the drain rate).
func (n *Node) applySplit(now time.Time, level degrade.Level) {
	if n.proc == nil || n.cfg.Windows.Split != "auto" || n.limits == nil {
		return
	}
	if running, _ := n.proc.Workers(); running < splitMinWorkers {
		return
	}
	d := n.deg
	if d.splitSeen == nil {
		d.splitSeen = map[string]time.Time{}
	}
	for _, h := range n.limits.hot.Hotspots() {
		if h.Type == pressure.StreamSkew || h.Type == pressure.KeySkew {
			d.splitSeen[h.Stream] = now
		}
	}
	var want []string
	for s, at := range d.splitSeen {
		if now.Sub(at) < splitHold {
			want = append(want, s)
		} else {
			delete(d.splitSeen, s)
		}
	}
	slices.Sort(want)
	cur, _ := n.proc.Split()
	if slices.Equal(want, cur) || now.Sub(d.splitChanged) < splitMinGap || level >= degrade.Limited {
		return
	}
	d.splitChanged = now
	n.log.Info("hot streams split across the processing workers", "streams", want, "before", cur)
	n.proc.SetSplit(want, false)
}
