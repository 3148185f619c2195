package process

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the processor's Prometheus metrics.
type Metrics struct {
	Events        prometheus.Counter
	Late          *prometheus.CounterVec // by stream
	WindowsClosed prometheus.Counter
	Alerts        *prometheus.CounterVec // by severity and state

	Checkpoints        prometheus.Counter
	CheckpointFailures prometheus.Counter
	CheckpointSkipped  prometheus.Counter
	CheckpointSeconds  prometheus.Histogram
	CheckpointBytes    prometheus.Gauge
	CheckpointOffset   prometheus.Gauge
	LoadFailures       prometheus.Counter
	RestoreSeconds     prometheus.Gauge

	SpilledStreams prometheus.Gauge
	SpillBytes     prometheus.Gauge
	Spills         prometheus.Counter
	SpillLoads     prometheus.Counter
}

// NewMetrics creates the processor metrics and registers them with reg if it
// is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_process_events_total",
			Help: "Events processed by windowing and alert rules (replays included).",
		}),
		Late: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_process_late_events_total",
			Help: "Events that arrived after a window they belong to had closed; kept raw and flagged.",
		}, []string{"stream"}),
		WindowsClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_windows_written_total",
			Help: "Window results written to the log.",
		}),
		Alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_alerts_written_total",
			Help: "Alert state changes written to the log, by severity and state.",
		}, []string{"severity", "state"}),
		Checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_checkpoints_written_total",
			Help: "Checkpoints of the processing state written.",
		}),
		CheckpointFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_checkpoint_write_failures_total",
			Help: "Checkpoints that could not be written; the previous ones stay in use.",
		}),
		CheckpointSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_checkpoints_skipped_total",
			Help: "Checkpoints not taken because the previous one was still being written.",
		}),
		CheckpointSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "holdfast_checkpoint_duration_seconds",
			Help:    "From taking a checkpoint to having it on disk: state capture, encoding and the atomic write.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		CheckpointBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_checkpoint_bytes",
			Help: "Size of the newest checkpoint.",
		}),
		CheckpointOffset: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_checkpoint_offset",
			Help: "Log offset the newest checkpoint covers.",
		}),
		LoadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_checkpoint_load_failures_total",
			Help: "Checkpoints skipped at start-up because they were damaged or unusable.",
		}),
		RestoreSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_checkpoint_restore_seconds",
			Help: "How long loading the checkpoint took at the last start (0: none was used).",
		}),
		SpilledStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_window_spilled_streams",
			Help: "Streams whose window state is spilled to disk (the memory trigger's action).",
		}),
		SpillBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_window_spill_bytes",
			Help: "Bytes of spilled window state the spill files hold for the spilled streams.",
		}),
		Spills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_window_spills_total",
			Help: "Streams whose window state was spilled to disk.",
		}),
		SpillLoads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_window_spill_loads_total",
			Help: "Spilled streams loaded back into memory: for an item, a closing watermark, or spilling turned off.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Events, m.Late, m.WindowsClosed, m.Alerts, m.Checkpoints, m.CheckpointFailures,
			m.CheckpointSkipped, m.CheckpointSeconds, m.CheckpointBytes, m.CheckpointOffset, m.LoadFailures, m.RestoreSeconds,
			m.SpilledStreams, m.SpillBytes, m.Spills, m.SpillLoads)
	}
	return m
}
