package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Report is the outcome of a run. Its JSON form is for scripts and is kept
// stable: fields are only ever added.
type Report struct {
	Transport     string  `json:"transport"`
	Target        string  `json:"target"`             // where the load went
	NodeStarted   bool    `json:"node_started"`       // the bench started and stopped the node
	NodePID       int     `json:"node_pid,omitempty"` // when NodeStarted
	DataDir       string  `json:"data_dir,omitempty"` // the started node's, when kept
	Devices       int     `json:"devices"`
	Connections   int     `json:"connections"`         // HTTP connections, or MQTT connections (one per device)
	Batch         int     `json:"batch,omitempty"`     // HTTP: events per request
	Inflight      int     `json:"inflight,omitempty"`  // MQTT: unacknowledged messages per device
	AckBatch      int     `json:"ack_batch,omitempty"` // MQTT flat out with many in flight: slots refilled, and acks read, at a time
	Rate          float64 `json:"rate"`                // target events/s; 0: flat out
	Count         int64   `json:"count,omitempty"`     // event limit
	DurationLimit float64 `json:"duration_limit_s,omitempty"`

	Seconds    float64 `json:"duration_s"` // from the first send to the last ack
	Sent       int64   `json:"events_sent"`
	Acked      int64   `json:"events_acked"`
	Throughput float64 `json:"throughput_eps"` // acked / duration_s

	// Errors counts events not acknowledged, by kind, except connection_lost,
	// which counts lost connections, and not_stored, the events acknowledged
	// but missing from the node's own accepted counter.
	Errors        map[string]int64  `json:"errors"`
	ErrorExamples map[string]string `json:"error_examples,omitempty"`

	// NodeAccepted and NodeRejected are how much the node's counters for
	// the transport rose during the run; -1 if they could not be read.
	NodeAccepted int64 `json:"node_accepted"`
	NodeRejected int64 `json:"node_rejected"`

	Latency   Latency `json:"ack_latency"`
	RSS       RSS     `json:"node_rss"`
	CPU       CPU     `json:"cpu"`
	PerSecond []int64 `json:"acked_per_second"` // events acked in each second of the run; the last may be partial

	// Compared marks the run against --compare-broker; Compare is that run,
	// with the same load, and CompareRatio this run's throughput over its.
	Compared     bool    `json:"compared_broker,omitempty"`
	Compare      *Report `json:"compare,omitempty"`
	CompareRatio float64 `json:"throughput_ratio,omitempty"`
}

// Latency summarises ack latencies in milliseconds.
type Latency struct {
	Per     string  `json:"per"`           // "batch" (one HTTP request) or "message" (one MQTT publish)
	From    string  `json:"measured_from"` // "intended_send_time" at a fixed rate, else "send_time"
	Samples uint64  `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P95     float64 `json:"p95_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
	Mean    float64 `json:"mean_ms"`
	// SendLagP99 and SendLagMax are how late the generator sent, at a fixed
	// rate: time from when a send was due to when it went out. Large values
	// mean the node (or the generator) could not keep up with the rate.
	SendLagP99 float64 `json:"send_lag_p99_ms,omitempty"`
	SendLagMax float64 `json:"send_lag_max_ms,omitempty"`
}

// RSS is the node's resident memory, from process_resident_memory_bytes
// (samples during the run of a node the bench started: from /proc).
type RSS struct {
	IdleBytes  uint64 `json:"idle_bytes"`          // before the load
	PeakBytes  uint64 `json:"peak_bytes"`          // highest sample during the run
	FinalBytes uint64 `json:"final_bytes"`         // after the load
	HWMBytes   uint64 `json:"hwm_bytes,omitempty"` // kernel high-water mark (VmHWM), for a node the bench started
	Samples    int    `json:"samples"`             // taken every 250 ms
	Error      string `json:"error,omitempty"`     // why there are none
}

// CPU is the processor time used during the run, in cores (CPU seconds per
// second). On one machine, the bench's share is not the node's to use.
type CPU struct {
	Cores int     `json:"cores"`       // on this machine
	Node  float64 `json:"node_cores"`  // from process_cpu_seconds_total
	Bench float64 `json:"bench_cores"` // the load generator itself
	// BenchUSPerEvent is the generator's CPU time (getrusage, user and
	// system) per event acknowledged, in µs: 0 where it is not measured.
	BenchUSPerEvent float64 `json:"bench_us_per_event"`
	// Its two parts: the generator's own code (user) and the kernel's
	// (system: its TCP sends and receives, which over loopback include
	// delivering each segment into the broker's socket).
	BenchUserUSPerEvent float64 `json:"bench_user_us_per_event"`
	BenchSysUSPerEvent  float64 `json:"bench_sys_us_per_event"`
}

// ErrorCount returns the number of errors of every kind.
func (r *Report) ErrorCount() int64 {
	var n int64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// fill takes the run's results.
func (rep *Report) fill(r *run, d driver, elapsed time.Duration) {
	rep.Seconds = math.Round(elapsed.Seconds()*1000) / 1000
	rep.Sent, rep.Acked = r.sent.Load(), r.acked.Load()
	if elapsed > 0 {
		rep.Throughput = math.Round(float64(rep.Acked) / elapsed.Seconds())
	}
	rep.Errors, rep.ErrorExamples = r.errors()
	rep.NodeAccepted, rep.NodeRejected = -1, -1

	ack, lag := d.latency()
	rep.Latency.From = "send_time"
	if r.sched.fixedRate() {
		rep.Latency.From = "intended_send_time"
		rep.Latency.SendLagP99, rep.Latency.SendLagMax = ms(lag.quantile(0.99)), ms(lag.maxValue())
	}
	rep.Latency.Samples = ack.count()
	rep.Latency.P50, rep.Latency.P95 = ms(ack.quantile(0.50)), ms(ack.quantile(0.95))
	rep.Latency.P99, rep.Latency.Max = ms(ack.quantile(0.99)), ms(ack.maxValue())
	rep.Latency.Mean = ms(ack.mean())

	secs := min(int(math.Ceil(elapsed.Seconds())), len(r.slots))
	rep.PerSecond = make([]int64, secs)
	for i := range rep.PerSecond {
		rep.PerSecond[i] = r.slots[i].Load()
	}
}

// checkNodeCounters compares what the node counted with what was
// acknowledged. Others may be loading the node too, so only a shortfall is an
// error: it means the node acknowledged events it did not accept (an MQTT
// 3.1.1 broker acks an invalid publish, having no way to refuse it).
func (rep *Report) checkNodeCounters(transport string, before, after nodeMetrics) {
	rep.NodeAccepted = int64(after.accepted[transport] - before.accepted[transport])
	rep.NodeRejected = int64(after.rejected[transport] - before.rejected[transport])
	if short := rep.Acked - rep.NodeAccepted; short > 0 {
		rep.Errors["not_stored"] += short
		if rep.ErrorExamples == nil {
			rep.ErrorExamples = map[string]string{}
		}
		rep.ErrorExamples["not_stored"] = fmt.Sprintf("%d events acknowledged, the node counted %d accepted and %d rejected",
			rep.Acked, rep.NodeAccepted, rep.NodeRejected)
	}
}

// WriteText writes the report for people.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	node := "a node it did not start"
	if rep.Compared {
		node = "the broker compared with"
		if rep.Transport == transportJetStream {
			node = "an embedded JetStream, file storage, sync_interval always, each batch one message"
		}
	}
	if rep.NodeStarted {
		node = fmt.Sprintf("a node it started (pid %d)", rep.NodePID)
		if rep.DataDir != "" {
			node += ", data kept in " + rep.DataDir
		}
	}
	p("holdfast bench ingest: %s to %s, %s\n", rep.Transport, rep.Target, node)
	switch rep.Transport {
	case TransportHTTP:
		p("  devices      %d over %d connections, batches of %d events (NDJSON)\n", rep.Devices, rep.Connections, rep.Batch)
	case TransportMQTT:
		p("  devices      %d, one MQTT 3.1.1 connection each, QoS 1, up to %d unacked per device\n", rep.Devices, rep.Inflight)
	}
	if rep.Rate > 0 {
		p("  load         fixed rate %s events/s\n", group(int64(rep.Rate)))
	} else {
		if rep.AckBatch > 1 {
			p("  load         flat out (closed loop: each device's window is refilled, in one write, once %d of its %d are acked;\n", rep.AckBatch, rep.Inflight)
			p("               acks are read in those batches, so a latency includes the wait for its batch: --rate for latency)\n")
		} else {
			p("  load         flat out (closed loop: a new send as soon as an ack frees a slot)\n")
		}
	}
	limit := []string{}
	if rep.DurationLimit > 0 {
		limit = append(limit, fmt.Sprintf("%gs", rep.DurationLimit))
	}
	if rep.Count > 0 {
		limit = append(limit, group(rep.Count)+" events")
	}
	p("  duration     %.2fs (limit %s)\n", rep.Seconds, strings.Join(limit, " or "))
	p("  events       %s sent, %s acked\n", group(rep.Sent), group(rep.Acked))
	if n := rep.ErrorCount(); n == 0 {
		p("  errors       0\n")
	} else {
		p("  errors       %s\n", group(n))
		for _, k := range sortedKinds(rep.Errors) {
			p("    %-22s %s", k, group(rep.Errors[k]))
			if ex := rep.ErrorExamples[k]; ex != "" {
				p("  (e.g. %s)", trimExample(ex))
			}
			p("\n")
		}
	}
	if rep.NodeAccepted >= 0 {
		p("  node counted %s accepted, %s rejected (%s)\n", group(rep.NodeAccepted), group(rep.NodeRejected), rep.Transport)
	}
	p("  throughput   %s events/s\n", group(int64(rep.Throughput)))

	l := rep.Latency
	unit := "per message"
	if l.Per == "batch" {
		unit = fmt.Sprintf("per batch of %d events (one HTTP request)", rep.Batch)
	}
	from := "from the actual send time"
	if l.From == "intended_send_time" {
		from = "from the intended send time (fixed-rate schedule; no coordinated omission)"
	}
	p("  ack latency  %s, %s\n", unit, from)
	if l.Samples == 0 {
		p("               none: nothing was acknowledged\n")
	} else {
		p("               p50 %s  p95 %s  p99 %s  max %s  mean %s  (%s samples)\n",
			fmtMs(l.P50), fmtMs(l.P95), fmtMs(l.P99), fmtMs(l.Max), fmtMs(l.Mean), group(int64(l.Samples)))
	}
	if l.From == "intended_send_time" {
		p("  send lag     p99 %s  max %s  (how late sends left against the schedule)\n", fmtMs(l.SendLagP99), fmtMs(l.SendLagMax))
	}

	r := rep.RSS
	switch {
	case r.Error == errNoMetrics.Error():
		p("  node         %s\n", r.Error)
	case r.Error != "" && rep.Transport == TransportMQTT && !rep.NodeStarted:
		// Any MQTT broker can be the target; without a holdfast /metrics
		// the report is the generator's alone.
		p("  node         no holdfast /metrics (%s): the generator's own figures only\n", trimExample(r.Error))
	case r.Error != "":
		p("  node RSS     unknown: %s\n", r.Error)
	default:
		p("  node RSS     idle %s, peak %s, after %s  (%d samples every 250ms)", mib(r.IdleBytes), mib(r.PeakBytes), mib(r.FinalBytes), r.Samples)
		if r.HWMBytes > 0 {
			p("; kernel high-water mark %s", mib(r.HWMBytes))
		}
		p("\n")
	}
	if c := rep.CPU; c.Cores > 0 {
		node := "?"
		if rep.NodeAccepted >= 0 {
			node = fmt.Sprintf("%.2f", c.Node)
		}
		if rep.Transport == TransportMQTT && !rep.NodeStarted && rep.RSS.Error != "" {
			p("  cpu          bench %.2f cores, of %d on this machine\n", c.Bench, c.Cores)
		} else {
			p("  cpu          node %s cores, bench %.2f cores, of %d on this machine\n", node, c.Bench, c.Cores)
		}
		if c.BenchUSPerEvent > 0 {
			p("  generator    %.2f µs CPU per acked event (the bench process: user %.2f + system %.2f)\n",
				c.BenchUSPerEvent, c.BenchUserUSPerEvent, c.BenchSysUSPerEvent)
		}
	}
	p("\n")
	b.WriteString(chart(rep.PerSecond, rep.Seconds))
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if rep.Compare == nil {
		return nil
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return err
	}
	if err := rep.Compare.WriteText(w); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nthroughput %s / %s = %.2fx  (%s vs %s events/s, same load, same generator)\n",
		rep.Target, rep.Compare.Target, rep.CompareRatio, group(int64(rep.Throughput)), group(int64(rep.Compare.Throughput)))
	return err
}

func trimExample(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func fmtMs(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.3fms", v)
	case v < 100:
		return fmt.Sprintf("%.2fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// group formats n with thousands separators.
func group(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// si formats v in K or M, to about three digits.
func si(v float64) string {
	switch {
	case v >= 1e6:
		return trimZero(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case v >= 1e3:
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "K"
	}
	return fmt.Sprintf("%.0f", v)
}

func trimZero(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

const (
	chartRows = 8
	chartCols = 60
)

// chart draws acked events per second as columns of '#', one column per
// second (several when the run is long), over the complete seconds of the run.
func chart(perSecond []int64, seconds float64) string {
	full := min(int(seconds), len(perSecond))
	if full < 2 {
		return "  (run too short for a throughput chart)\n"
	}
	per := (full + chartCols - 1) / chartCols // seconds per column
	cols := make([]float64, 0, chartCols)
	for i := 0; i+per <= full; i += per {
		var sum int64
		for _, v := range perSecond[i : i+per] {
			sum += v
		}
		cols = append(cols, float64(sum)/float64(per))
	}
	top := 0.0
	for _, v := range cols {
		top = max(top, v)
	}
	var b strings.Builder
	what := "one column per second"
	if per > 1 {
		what = fmt.Sprintf("one column per %d seconds", per)
	}
	fmt.Fprintf(&b, "  acked events/s, %s\n", what)
	if top == 0 {
		return b.String() + "  (nothing was acknowledged)\n"
	}
	label := func(row int) string {
		switch row {
		case chartRows:
			return si(top)
		case chartRows / 2:
			return si(top / 2)
		}
		return ""
	}
	for row := chartRows; row >= 1; row-- {
		line := []byte(fmt.Sprintf("  %7s |", label(row)))
		for _, v := range cols {
			h := v / top * chartRows // column height in rows
			switch {
			case h >= float64(row):
				line = append(line, '#')
			case h >= float64(row)-0.5:
				line = append(line, '.')
			default:
				line = append(line, ' ')
			}
		}
		b.Write(bytes.TrimRight(line, " "))
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "  %7s +%s\n", "0", strings.Repeat("-", len(cols)))
	end := fmt.Sprintf("%ds", len(cols)*per)
	fmt.Fprintf(&b, "  %7s  0s%s%s\n", "", strings.Repeat(" ", max(len(cols)-2-len(end), 1)), end)
	return b.String()
}

// sortedKinds returns m's keys in order.
func sortedKinds(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
