package backup

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the backup's Prometheus metrics.
type metrics struct {
	snapshots       prometheus.Counter
	snapshotBytes   prometheus.Gauge
	snapshotSeconds prometheus.Gauge
	uploads         prometheus.Counter
	uploadFailures  prometheus.Counter
	pending         prometheus.Gauge
	configPublished prometheus.Counter
}

// newMetrics registers the metrics with reg; a nil reg registers nothing.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		snapshots: f.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_snapshots_total",
			Help: "State snapshots taken (copies of a new checkpoint written to the snapshot directory).",
		}),
		snapshotBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_snapshot_bytes",
			Help: "Size of the last snapshot taken.",
		}),
		snapshotSeconds: f.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_snapshot_duration_seconds",
			Help: "Time the last snapshot took: choosing and reading the checkpoint, writing the copy.",
		}),
		uploads: f.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_snapshot_uploads_total",
			Help: "Snapshots uploaded to the cloud object store.",
		}),
		uploadFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_snapshot_upload_failures_total",
			Help: "Failed snapshot upload attempts (the snapshot stays pending and is retried).",
		}),
		pending: f.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_snapshot_pending_uploads",
			Help: "Local snapshots not yet uploaded to the cloud.",
		}),
		configPublished: f.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_config_versions_published_total",
			Help: "New config versions this node put into the cloud config registry.",
		}),
	}
}
