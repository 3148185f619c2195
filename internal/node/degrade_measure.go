package node

import (
	"bufio"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/holdfast-edge/holdfast/internal/degrade"
)

// ackWindow is how many one-second snapshots of the ack histogram the p99
// is taken over.
const ackWindow = 10

// meter measures the conditions cheaply, once a second: CPU from getrusage,
// memory from runtime/metrics against the limit (memoryInUse), the p99 ack
// latency from ingest's histogram over the last ackWindow seconds. Used by
// the operator goroutine only.
type meter struct {
	load     loadMeter
	limit    uint64 // the memory limit, bytes
	samples  []metrics.Sample
	ack      [][]uint64 // cumulative bucket counts, one snapshot a second, oldest first
	ackBound []float64

	gcCycles uint64      // GC cycles completed as of gcSeen
	gcSeen   time.Time   // when gcCycles last changed
	gcBusy   atomic.Bool // a GC the meter started is running
}

// The memory samples, in this order.
var memorySamples = []string{
	"/memory/classes/total:bytes", "/memory/classes/heap/released:bytes", "/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes", "/gc/heap/live:bytes", "/gc/cycles/total:gc-cycles",
}

// A memory figure at least gcNudgeAt of the limit with no GC completed for
// gcStale makes the meter start one: the live heap is known as of the last
// GC only, and a node gone quiet after a burst may not collect for minutes
// (the runtime's forced GC is every 2 min), holding the burst's garbage.
const (
	gcStale   = 5 * time.Second
	gcNudgeAt = 0.5
)

func newMeter() *meter {
	m := &meter{limit: memoryLimit()}
	for _, name := range memorySamples {
		m.samples = append(m.samples, metrics.Sample{Name: name})
	}
	return m
}

// memoryInUse is what of the Go runtime's memory (total, as GOMEMLIMIT
// counts it) the node cannot do without: less the heap returned to the
// system (released) and the heap held free for reuse (free) — the runtime
// keeps up to 95 % of GOMEMLIMIT mapped after a burst and gives it back only
// slowly, so counting it would hold a node at minimal long after the burst —
// and less the objects found dead: of the heap's objects only those live
// at the last GC count.
func memoryInUse(total, released, free, objects, live uint64) uint64 {
	used := total - min(total, released+free)
	dead := objects - min(objects, live)
	return used - min(used, dead)
}

// memory reads the memory figure (0–1 of the limit) and starts a GC when
// the figure is high and the last GC is old (gcStale).
func (m *meter) memory(now time.Time) float64 {
	metrics.Read(m.samples)
	v := func(i int) uint64 {
		if m.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return m.samples[i].Value.Uint64()
	}
	if cycles := v(5); cycles != m.gcCycles || m.gcSeen.IsZero() {
		m.gcCycles, m.gcSeen = cycles, now
	}
	if m.limit == 0 {
		return 0
	}
	f := float64(memoryInUse(v(0), v(1), v(2), v(3), v(4))) / float64(m.limit)
	if f >= gcNudgeAt && now.Sub(m.gcSeen) >= gcStale && m.gcBusy.CompareAndSwap(false, true) {
		go func() {
			defer m.gcBusy.Store(false)
			runtime.GC()
		}()
	}
	return f
}

// measure returns the conditions and the triggers' figures as of now.
func (n *Node) measure(now time.Time) (degrade.Conditions, degrade.TriggerValues) {
	m := n.deg.meter
	var c degrade.Conditions
	for _, s := range n.syncs {
		if s == n.siteSync && n.cfg.Cloud.URL != "" {
			continue // the cloud fallback stands in for the aggregator (cloudOffline)
		}
		if s.Offline() {
			c.SinksOffline = append(c.SinksOffline, s.Name())
		}
	}
	_, c.CPU = m.load.read(n, now)
	c.Memory = m.memory(now)
	c.AckP99 = m.ackP99(n)
	if n.proc != nil {
		c.Queue = n.proc.Status().Lag
	}
	var util float64
	if w := n.pressure; w != nil {
		w.mu.Lock()
		c.Buffer, _ = w.mon.Level()
		w.mu.Unlock()
		if w.maxBytes() > 0 {
			util = w.utilisation()
		}
	}
	c.BufferFailed = n.buf.Err() != nil
	return c, degrade.TriggerValues{
		CPU: c.CPU, Buffer: util, Queue: float64(c.Queue), Memory: c.Memory, Latency: c.AckP99.Seconds(),
	}
}

// ackP99 takes a snapshot of ingest's ack histogram (every transport) and
// returns the 99th percentile of the acks of the last ackWindow seconds: the
// upper bound of the bucket it falls in; 0 without acks.
func (m *meter) ackP99(n *Node) time.Duration {
	if n.op == nil || n.op.ingest == nil {
		return 0
	}
	ch := make(chan prometheus.Metric, 8)
	go func() { n.op.ingest.AckSeconds.Collect(ch); close(ch) }()
	var snap []uint64
	for pm := range ch {
		var d dto.Metric
		if pm.Write(&d) != nil || d.Histogram == nil {
			continue
		}
		bs := d.Histogram.GetBucket()
		if snap == nil {
			snap = make([]uint64, len(bs)+1)
			m.ackBound = m.ackBound[:0]
			for _, b := range bs {
				m.ackBound = append(m.ackBound, b.GetUpperBound())
			}
		}
		for i, b := range bs {
			if i < len(snap)-1 {
				snap[i] += b.GetCumulativeCount()
			}
		}
		snap[len(snap)-1] += d.Histogram.GetSampleCount()
	}
	if snap == nil {
		return 0
	}
	m.ack = append(m.ack, snap)
	if len(m.ack) > ackWindow+1 {
		m.ack = m.ack[1:]
	}
	old := m.ack[0]
	if len(old) != len(snap) {
		return 0
	}
	total := snap[len(snap)-1] - old[len(old)-1]
	if total == 0 {
		return 0
	}
	want := uint64(math.Ceil(0.99 * float64(total)))
	for i, b := range m.ackBound {
		if snap[i]-old[i] >= want {
			return time.Duration(b * float64(time.Second))
		}
	}
	// Beyond the last bucket: at least twice its bound.
	return time.Duration(2 * m.ackBound[len(m.ackBound)-1] * float64(time.Second))
}

// memoryLimit is the lowest of GOMEMLIMIT (debug.SetMemoryLimit), the
// process's cgroup's memory limit (cgroupMemoryLimit) and the machine's RAM;
// 0 if none is known.
func memoryLimit() uint64 {
	limit := uint64(math.MaxUint64)
	if l := debug.SetMemoryLimit(-1); l > 0 && l < math.MaxInt64 {
		limit = uint64(l)
	}
	if self, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if v := cgroupMemoryLimit("/sys/fs/cgroup", self); v > 0 {
			limit = min(limit, v)
		}
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				if v, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64); err == nil {
					limit = min(limit, v<<10)
				}
				break
			}
		}
	}
	if limit == math.MaxUint64 {
		return 0
	}
	return limit
}
