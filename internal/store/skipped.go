package store

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// A record a query cannot decode is skipped, never a failed query: one bad
// record (a window result with an infinite sum written before issue 11, a
// record of a newer binary, damage past the checksum) must not make every
// query over its stretch of the log fail. Each skip is counted by reason, in
// holdfast_query_skipped_records_total and in /v1/status, and the first few
// are logged with their offsets. A record is counted each time a query meets
// it.

// Reasons a query skips a record.
const (
	SkipNonFinite = "non_finite" // a NaN or ±Inf where a finite number belongs
	SkipCorrupt   = "corrupt"    // any other departure from the record format
)

// skipLogLimit is how many skipped records a Store logs; the metric counts
// them all.
const skipLogLimit = 10

// Metrics are the store's Prometheus metrics.
type Metrics struct {
	QuerySkipped *prometheus.CounterVec
	// dedup is the open store's dedup set, read by holdfast_dedup_keys and
	// holdfast_dedup_evicted_total.
	dedup atomic.Pointer[dedup]
}

// NewMetrics creates the store metrics and registers them with reg if it is
// not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		QuerySkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_query_skipped_records_total",
			Help: "Records a local query (events, windows) could not decode and skipped, by reason; counted each time a query meets one.",
		}, []string{"reason"}),
	}
	for _, r := range []string{SkipNonFinite, SkipCorrupt} {
		m.QuerySkipped.WithLabelValues(r) // present at 0
	}
	keys := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "holdfast_dedup_keys",
		Help: "Keys the retry de-duplication remembers: event ids, and the contents of id-less events with the device's ts (ingest.dedup_window, ingest.dedup_max_entries).",
	}, func() float64 {
		if d := m.dedup.Load(); d != nil {
			return float64(d.len())
		}
		return 0
	})
	evicted := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "holdfast_dedup_evicted_total",
		Help: "Keys the retry de-duplication forgot before ingest.dedup_window ended, because it held ingest.dedup_max_entries; a retry of their event is stored again.",
	}, func() float64 {
		if d := m.dedup.Load(); d != nil {
			return float64(d.evictedCount())
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.QuerySkipped, keys, evicted)
	}
	return m
}

// skipCounts are the records queries skipped, by reason.
type skipCounts struct {
	nonFinite, corrupt atomic.Uint64
	logged             atomic.Int64
}

// skip counts a record at off that a query could not decode.
func (s *Store) skip(query string, off uint64, err error) {
	reason := SkipCorrupt
	if errors.Is(err, event.ErrNonFinite) {
		reason = SkipNonFinite
		s.skipped.nonFinite.Add(1)
	} else {
		s.skipped.corrupt.Add(1)
	}
	if s.opts.Metrics != nil {
		s.opts.Metrics.QuerySkipped.WithLabelValues(reason).Inc()
	}
	if s.skipped.logged.Add(1) <= skipLogLimit {
		s.opts.Logger.Warn("query skipped a record it cannot decode", "query", query, "offset", off, "reason", reason, "err", err)
	}
}

// Skipped returns how many records queries have skipped since the Store
// opened, by reason (SkipNonFinite, SkipCorrupt).
func (s *Store) Skipped() map[string]uint64 {
	return map[string]uint64{
		SkipNonFinite: s.skipped.nonFinite.Load(),
		SkipCorrupt:   s.skipped.corrupt.Load(),
	}
}
