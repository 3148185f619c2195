package node

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/process"
)

// TestMemoryTriggerSpills: the memory trigger up turns the processor's
// spilling on, down turns it off; steady changes nothing, and with
// degradation.spill_window_state false the trigger is reported only.
func TestMemoryTriggerSpills(t *testing.T) {
	n, p := triggerNode(t, config.Default(), process.Options{Workers: 1, SpillDir: t.TempDir()})
	mem := func(state string) []degrade.TriggerStatus {
		return []degrade.TriggerStatus{{Metric: "cpu", State: degrade.Up}, {Metric: "memory", State: state}}
	}
	n.applySpill(mem(degrade.Steady))
	require.False(t, p.Spilling())
	n.applySpill(mem(degrade.Up))
	require.True(t, p.Spilling())
	n.applySpill(mem(degrade.Down))
	require.False(t, p.Spilling())

	n.cfg.Degradation.SpillWindowState = false
	n.applySpill(mem(degrade.Up))
	require.False(t, p.Spilling(), "spill_window_state false: reported only")
}
