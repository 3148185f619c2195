package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram records latencies in nanoseconds in log-linear buckets, as an HDR
// histogram does: values below 256 ns are exact, larger ones fall in buckets
// 1/128 of their power of two wide, so a reported percentile is within 0.8 % of
// the true sample. Its size is fixed (58 KiB) however many samples it holds, and
// it is safe for concurrent use: every field is updated atomically.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	max    atomic.Uint64 // exact
}

const (
	histSubBits = 7
	histLinear  = 1 << (histSubBits + 1) // values below this have a bucket each
	histHalf    = 1 << histSubBits
	histBuckets = histLinear + (64-histSubBits-1)*histHalf
)

func bucketOf(v uint64) int {
	if v < histLinear {
		return int(v)
	}
	shift := bits.Len64(v) - (histSubBits + 1) // ≥ 1
	top := v >> shift                          // in [histHalf, 2*histHalf)
	return histLinear + (shift-1)*histHalf + int(top-histHalf)
}

// bucketRange returns the lowest value in bucket i and the bucket's width.
func bucketRange(i int) (lo, width uint64) {
	if i < histLinear {
		return uint64(i), 1
	}
	i -= histLinear
	shift := i/histHalf + 1
	top := uint64(i%histHalf + histHalf)
	return top << shift, 1 << shift
}

func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// merge adds o's samples to h. o must not be recorded into concurrently.
func (h *histogram) merge(o *histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	for v := o.max.Load(); ; {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

func (h *histogram) count() uint64 { return h.n.Load() }

func (h *histogram) maxValue() time.Duration { return time.Duration(h.max.Load()) }

func (h *histogram) mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// quantile returns the smallest recorded value v (to bucket precision) such
// that at least q of the samples are ≤ v. It is monotonic in q and never
// exceeds the exact maximum, so p50 ≤ p95 ≤ p99 ≤ max always holds.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, width := bucketRange(i)
			return time.Duration(min(lo+width-1, h.max.Load()))
		}
	}
	return h.maxValue()
}
