package api

import (
	"sync"
	"time"
)

// HistoryInterval is how often the node samples its status for
// GET /v1/status/history, and HistoryKeep how many samples it keeps: an
// hour of them.
const (
	HistoryInterval = 10 * time.Second
	HistoryKeep     = int(time.Hour / HistoryInterval)
)

// Sample is one point of the last hour's history (GET /v1/status/history).
type Sample struct {
	At time.Time `json:"at"`
	// IngestRate is events acknowledged per second, and AckMeanSeconds
	// the mean time to acknowledge a batch, over the interval before At.
	IngestRate     float64 `json:"ingest_rate"`
	AckMeanSeconds float64 `json:"ack_mean_seconds"`
	// Buffer: pending bytes against capacity, and the pressure level.
	BufferUtilisation float64 `json:"buffer_utilisation"`
	PendingBytes      int64   `json:"pending_bytes"`
	BufferLevel       string  `json:"buffer_level"`
	// SyncLagRecords and OldestUnsyncedSeconds are the largest over the
	// sinks; SinksNotConnected counts those not connected.
	SyncLagRecords        uint64  `json:"sync_lag_records"`
	OldestUnsyncedSeconds float64 `json:"oldest_unsynced_seconds"`
	SinksNotConnected     int     `json:"sinks_not_connected"`
	ProcessingLagRecords  uint64  `json:"processing_lag_records"`
	AlertsFiring          int     `json:"alerts_firing"`
	// Losses is the total of records lost so far (the loss ledger's).
	Losses uint64 `json:"losses"`
}

// Counters are the running totals a History turns into rates.
type Counters struct {
	Accepted, Acks uint64
	AckTime        time.Duration
}

// History keeps the newest HistoryKeep samples and the counters of the
// last, to give rates. It is safe for concurrent use.
type History struct {
	mu sync.Mutex
	// Lock mu for the fields below.
	samples []Sample // oldest first
	prev    Counters
	prevAt  time.Time
}

// NewHistory returns an empty history.
func NewHistory() *History { return &History{} }

// Rates returns the ingest rate and mean ack latency from the last sample's
// counters to c at at; with no sample yet, or less than a second since it,
// those of the last sample.
func (h *History) Rates(at time.Time, c Counters) (rate, ackMean float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rates(at, c)
}

func (h *History) rates(at time.Time, c Counters) (rate, ackMean float64) {
	el := at.Sub(h.prevAt)
	if h.prevAt.IsZero() || el < time.Second {
		if n := len(h.samples); n > 0 {
			return h.samples[n-1].IngestRate, h.samples[n-1].AckMeanSeconds
		}
		return 0, 0
	}
	rate = float64(c.Accepted-min(h.prev.Accepted, c.Accepted)) / el.Seconds()
	if acks := c.Acks - min(h.prev.Acks, c.Acks); acks > 0 {
		ackMean = (c.AckTime - min(h.prev.AckTime, c.AckTime)).Seconds() / float64(acks)
	}
	return rate, ackMean
}

// Add appends s, taken at s.At with the counters c, filling in its rates,
// and drops the oldest sample past HistoryKeep.
func (h *History) Add(s Sample, c Counters) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.prevAt.IsZero() {
		s.IngestRate, s.AckMeanSeconds = h.rates(s.At, c)
	}
	h.prev, h.prevAt = c, s.At
	h.samples = append(h.samples, s)
	if len(h.samples) > HistoryKeep {
		h.samples = append(h.samples[:0], h.samples[len(h.samples)-HistoryKeep:]...)
	}
}

// Samples returns a copy of the samples, oldest first.
func (h *History) Samples() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Sample{}, h.samples...)
}
