package node

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/store"
)

// TestMemoryTriggerSpills: the memory trigger up turns the processor's
// spilling on, down turns it off; steady changes nothing, and with
// degradation.spill_window_state false the trigger is reported only.
func TestMemoryTriggerSpills(t *testing.T) {
	fs := vfs.NewMem()
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: fs, MaxBytes: 1 << 30})
	require.NoError(t, err)
	defer l.Close()
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	p, err := process.New(st, process.Options{Workers: 1, SpillDir: t.TempDir()})
	require.NoError(t, err)
	p.Start()
	defer p.Close()
	cfg := config.Default()
	n := &Node{cfg: cfg, reg: prometheus.NewRegistry(), proc: p, log: slog.New(slog.DiscardHandler)}
	n.deg = n.newDegradation()
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
