package node

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/degrade"
)

// TestDegradationAlert: the alert fires on entering limited (warning), is
// replaced by a critical one on minimal, stays one alert through emergency,
// and is resolved below limited; degraded raises none.
func TestDegradationAlert(t *testing.T) {
	n := &Node{cfg: config.Default(), reg: prometheus.NewRegistry(), op: newOperator()}
	n.deg = n.newDegradation()
	at := time.Unix(1_800_000_000, 0)
	step := func(from, to degrade.Level) {
		at = at.Add(time.Second)
		n.notifyDegradation(degrade.Change{From: from, To: to, At: at})
	}
	firing := func() []alert.Alert { return n.op.board.List(string(alert.Firing), "") }

	step(degrade.Normal, degrade.Degraded)
	require.Empty(t, firing())
	step(degrade.Degraded, degrade.Limited)
	require.Len(t, firing(), 1)
	require.Equal(t, alert.Warning, firing()[0].Severity)
	require.Equal(t, "degradation", firing()[0].Rule)
	step(degrade.Limited, degrade.Minimal)
	require.Len(t, firing(), 1)
	require.Equal(t, alert.Critical, firing()[0].Severity)
	id := firing()[0].ID
	step(degrade.Minimal, degrade.Emergency)
	require.Len(t, firing(), 1)
	require.Equal(t, id, firing()[0].ID, "same severity: the same alert")
	step(degrade.Emergency, degrade.Degraded)
	require.Empty(t, firing())
	require.Len(t, n.op.board.List(string(alert.Resolved), ""), 2)
}
