package node

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/store"
)

// TestTriggersScaleProcessingWorkers: the queue or CPU trigger up runs
// windows.workers workers; the CPU trigger down takes them to one, but not
// within the CPU's down time of the last scale-up; steady changes nothing.
func TestTriggersScaleProcessingWorkers(t *testing.T) {
	cfg := config.Default()
	cfg.Windows.Workers = 3
	cfg.Degradation.Triggers.CPU.DownFor = time.Minute
	n, p := triggerNode(t, cfg, process.Options{Workers: 3})
	running := func() int { r, _ := p.Workers(); return r }
	trig := func(cpu, queue string) []degrade.TriggerStatus {
		return []degrade.TriggerStatus{{Metric: "cpu", State: cpu}, {Metric: "queue", State: queue}}
	}
	at := time.Unix(1_800_000_000, 0)

	n.applyWorkers(trig(degrade.Steady, degrade.Steady), at)
	require.Equal(t, 3, running(), "steady: as configured")
	n.applyWorkers(trig(degrade.Down, degrade.Down), at)
	require.Eventually(t, func() bool { return running() == 1 }, 10*time.Second, 5*time.Millisecond, "idle: one worker")
	require.Equal(t, 1, p.Status().Workers)

	at = at.Add(time.Second)
	n.applyWorkers(trig(degrade.Down, degrade.Up), at)
	require.Eventually(t, func() bool { return running() == 3 }, 10*time.Second, 5*time.Millisecond, "a queue: every worker")
	n.applyWorkers(trig(degrade.Down, degrade.Down), at.Add(30*time.Second))
	_, asked := p.Workers()
	require.Equal(t, 3, asked, "not within the CPU's down time of the scale-up")
	n.applyWorkers(trig(degrade.Down, degrade.Down), at.Add(time.Minute))
	require.Eventually(t, func() bool { return running() == 1 }, 10*time.Second, 5*time.Millisecond)
	n.applyWorkers(trig(degrade.Up, degrade.Steady), at.Add(2*time.Minute))
	require.Eventually(t, func() bool { return running() == 3 }, 10*time.Second, 5*time.Millisecond, "CPU up: every worker")
}

// triggerNode is a node of cfg with only what the triggers' actions touch: a
// started processor of popts over a log in memory, and its degradation state.
func triggerNode(t *testing.T, cfg config.Config, popts process.Options) (*Node, *process.Processor) {
	t.Helper()
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: vfs.NewMem(), MaxBytes: 1 << 30})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	p, err := process.New(st, popts)
	require.NoError(t, err)
	p.Start()
	t.Cleanup(func() { p.Close() })
	n := &Node{cfg: cfg, reg: prometheus.NewRegistry(), proc: p, log: slog.New(slog.DiscardHandler)}
	n.deg = n.newDegradation()
	return n, p
}
