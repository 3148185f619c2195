package buffer

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the log's Prometheus metrics.
type Metrics struct {
	FsyncSeconds     prometheus.Histogram
	CommitRecords    prometheus.Histogram
	CommitBytes      prometheus.Histogram
	Records          prometheus.Counter
	Bytes            prometheus.Gauge
	Segments         prometheus.Gauge
	Failed           prometheus.Gauge
	TornBytes        prometheus.Counter
	CorruptRecords   prometheus.Counter
	CorruptBytes     prometheus.Counter
	RetentionRecords prometheus.Counter
	RetentionUnread  prometheus.Counter
	RemovedRecords   prometheus.Counter
	// ReadBytes counts the bytes the native log's readers took from its
	// tail in memory (TailReadBytes) and from the segment files
	// (FileReadBytes).
	TailReadBytes prometheus.Counter
	FileReadBytes prometheus.Counter
}

// NewMetrics creates the log metrics and registers them with reg if it is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		FsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "holdfast_log_fsync_seconds",
			Help:    "Latency of the fsync that ends each commit group.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}),
		CommitRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "holdfast_log_commit_records",
			Help:    "Records made durable by one commit group (one fsync).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		CommitBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "holdfast_log_commit_bytes",
			Help:    "Bytes written by one commit group.",
			Buckets: prometheus.ExponentialBuckets(64, 4, 10),
		}),
		Records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_log_records_appended_total",
			Help: "Records made durable in the log since start.",
		}),
		Bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_log_bytes",
			Help: "Bytes of valid data in all segments.",
		}),
		Segments: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_log_segments",
			Help: "Segment files in the log.",
		}),
		Failed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "holdfast_log_failed",
			Help: "1 once a write or fsync has failed and the log acknowledges nothing more.",
		}),
		TornBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_log_torn_bytes_total",
			Help: "Unacknowledged bytes of a torn tail truncated on open.",
		}),
		CorruptRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_log_corrupt_records_total",
			Help: "Records lost to corruption found inside the log and quarantined.",
		}),
		CorruptBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_log_corrupt_bytes_total",
			Help: "Bytes quarantined as corrupt.",
		}),
		RetentionRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_log_retention_deleted_records_total",
			Help: "Records deleted by size retention.",
		}),
		RetentionUnread: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_log_retention_unread_records_total",
			Help: "Records deleted by size retention before every cursor had read them.",
		}),
		RemovedRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "holdfast_log_removed_records_total",
			Help: "Chosen records removed ahead of retention by the buffer's pressure levels (Remover).",
		}),
	}
	read := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_log_read_bytes_total",
		Help: "Bytes the log's readers read, by where from: memory (the newest committed bytes, kept for readers at the live end) or file.",
	}, []string{"from"})
	m.TailReadBytes, m.FileReadBytes = read.WithLabelValues("memory"), read.WithLabelValues("file")
	if reg != nil {
		reg.MustRegister(m.FsyncSeconds, m.CommitRecords, m.CommitBytes, m.Records, m.Bytes, m.Segments,
			m.Failed, m.TornBytes, m.CorruptRecords, m.CorruptBytes, m.RetentionRecords, m.RetentionUnread, m.RemovedRecords,
			read)
	}
	return m
}
