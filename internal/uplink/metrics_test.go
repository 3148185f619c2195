package uplink

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
)

// TestMetricsSinksApart checks that two sinks keep separate series and that
// Track takes either machine alone.
func TestMetricsSinksApart(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	a := NewConnectivity(ConnectivityOptions{})
	b := NewBreaker("http", BreakerOptions{Failures: 1, OpenTimeout: time.Hour})
	m.Track("nats", a, nil)
	m.Track("http", nil, b)

	a.SyncFailed(errors.New("down"))
	_ = b.Do(func() error { return errors.New("down") })

	assert.Equal(t, 1.0, testutil.ToFloat64(m.connState.WithLabelValues("nats", "degraded")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.breakerState.WithLabelValues("http", "open")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.failures.WithLabelValues("nats")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.transitions.WithLabelValues("http", "closed", "open")))
	// Three connectivity series, three breaker series, one failure counter,
	// two transition counters.
	n, err := testutil.GatherAndCount(reg)
	assert.NoError(t, err)
	assert.Equal(t, 3+3+1+2, n)
}

func TestMetricsNilRegisterer(t *testing.T) {
	m := NewMetrics(nil)
	c := NewConnectivity(ConnectivityOptions{Initial: Offline})
	m.Track("cloud", c, nil)
	assert.Equal(t, 1.0, testutil.ToFloat64(m.connState.WithLabelValues("cloud", "offline")))
}
