package node

import (
	"path/filepath"

	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/degrade"
)

// spillDir is where the processor spills window state: a cache, emptied at
// every start (docs/format/spill.md).
func spillDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "spill") }

// applySpill is the memory trigger's action, "spill window state": while the
// trigger is up, each processing worker moves the window state of its quiet
// streams to its spill file and keeps only what idle timeouts, status and
// queries need in memory; a stream comes back for its next event or a window
// due to close. Once the trigger is down, the workers load every
// stream back. Called by the operator goroutine.
func (n *Node) applySpill(trig []degrade.TriggerStatus) {
	if n.proc == nil || !n.cfg.Degradation.SpillWindowState {
		return
	}
	on := false
	for _, t := range trig {
		if t.Metric == "memory" {
			on = t.State == degrade.Up
		}
	}
	if on == n.proc.Spilling() {
		return
	}
	n.proc.SetSpill(on)
	if on {
		n.log.Warn("memory trigger up: spilling quiet streams' window state to disk", "dir", spillDir(n.cfg))
	} else {
		n.log.Info("memory trigger down: loading spilled window state back")
	}
}
