package node

import "github.com/holdfast-edge/holdfast/internal/degrade"

// applyAggregatesOnly applies the feature matrix's cloud sync at limited,
// "aggregates only", to every syncer (uplink.Syncer.SetAggregatesOnly):
// window results, alerts and the critical lane (critical streams, the loss
// ledger) go on syncing; the other records wait in the log, their lanes'
// cursors held, and follow, each once, when the level steps down. It is on
// at limited exactly: minimal and emergency pause the sync altogether
// (applySync), and stepping from them back to limited resumes it with
// aggregates only. Like applySync it follows the level computed without the
// buffer: a filling buffer is the pressure levels' business. Called with
// the level the actions follow at every watchDegradation.
func (n *Node) applyAggregatesOnly(level degrade.Level) {
	on := level == degrade.Limited
	changed := false
	for _, s := range n.syncs {
		if s.AggregatesOnly() != on {
			s.SetAggregatesOnly(on)
			changed = true
		}
	}
	if !changed {
		return
	}
	if on {
		n.log.Warn("cloud sync limited to aggregates by the degradation level: window results, alerts and critical streams only; the other records follow on the step down",
			"level", level)
	} else {
		n.log.Info("cloud sync no longer limited to aggregates; the held records follow", "level", level)
	}
}

// aggregatesOnly reports whether the sync is limited to aggregates now.
func (n *Node) aggregatesOnly() bool {
	for _, s := range n.syncs {
		if s.AggregatesOnly() {
			return true
		}
	}
	return false
}
