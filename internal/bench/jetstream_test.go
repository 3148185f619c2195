package bench

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCompareJetStream runs an HTTP load and then the same batches against
// the embedded JetStream: both are reported, every batch acknowledged by
// JetStream, with the ratio of the throughputs; the option needs http.
func TestCompareJetStream(t *testing.T) {
	a := newTestNode(t)
	rep, err := Run(t.Context(), Options{Transport: TransportHTTP, Target: a.HTTPAddr(), CompareJetStream: true,
		Devices: 20, Count: 2000, Batch: 100, Connections: 4})
	require.NoError(t, err)
	require.NotNil(t, rep.Compare)
	c := rep.Compare
	assert.Equal(t, int64(2000), rep.Acked)
	assert.Equal(t, int64(2000), rep.NodeAccepted)
	assert.Equal(t, int64(2000), c.Acked, "every event's batch published and acknowledged")
	assert.Zero(t, c.ErrorCount(), "errors: %v %v", c.Errors, c.ErrorExamples)
	assert.Equal(t, 100, c.Batch)
	assert.Equal(t, int64(-1), c.NodeAccepted, "JetStream has no holdfast /metrics")
	assert.InDelta(t, rep.Throughput/c.Throughput, rep.CompareRatio, 0.01)
	var out strings.Builder
	require.NoError(t, rep.WriteText(&out))
	assert.Contains(t, out.String(), "an embedded JetStream, file storage, sync_interval always")

	_, err = Run(t.Context(), Options{Transport: TransportMQTT, Target: a.MQTTAddr(), CompareJetStream: true, Count: 10})
	assert.ErrorContains(t, err, "--compare-jetstream")
}
