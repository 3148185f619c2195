// Package bench is `holdfast bench`: a load generator that plays many devices
// sending events to a node over HTTP or MQTT and reports what the node did with
// them — events acknowledged, errors by kind, throughput, ack latency
// percentiles and the node's memory.
//
// It promises that every number it reports was observed: an event counts as
// acknowledged only when the node's HTTP response said it was accepted or its
// PUBACK arrived, and the node's own counters are checked against that. Runs
// are bounded by a duration or an event count and stop by themselves. Unless
// given a target, the bench starts a node of its own (the running binary's
// `run` subcommand) on 127.0.0.1 with a temporary data directory and stops it
// at the end.
//
// schollz/progressbar draws the progress bar. The MQTT client is the bench's
// own, a few hundred lines of MQTT 3.1.1 (mqttwire.go), so that the generator
// costs a few µs of CPU per message and is not the bottleneck it measures.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Transports.
const (
	TransportHTTP = "http"
	TransportMQTT = "mqtt"
)

// Options configure a run. Zero fields take the defaults noted.
type Options struct {
	Transport string // http (default) or mqtt

	// Target is the node to load: its HTTP host:port for http, its MQTT
	// broker's host:port for mqtt. Empty: start a node (see NodeBinary).
	Target string
	// HTTPTarget is where the node's /metrics is scraped when Target is an
	// MQTT broker (default: Target's host, port 8080). NoMetrics ("none"):
	// the target is not holdfast, read no /metrics and report only what the
	// generator measured.
	HTTPTarget string
	// CompareBroker, with mqtt, is another MQTT broker's host:port (a
	// Mosquitto, say) that the same load is run against after the target's,
	// so that one report gives both and their ratio.
	CompareBroker string
	// CompareJetStream, with http, runs the same batches against an
	// embedded JetStream with sync_interval always after the target's
	// (jetstream.go), so that one report gives both and their ratio.
	CompareJetStream bool
	// Token is an API token (role read) for the target's /metrics when it
	// has security on. Device authentication is not driven: the load goes
	// to a node without security.devices (its own started node is one).
	Token string

	Devices     int           // simulated devices (default 100)
	Rate        float64       // events/s over all devices; 0: flat out
	Duration    time.Duration // stop sending after this long; 0: no limit (Count must be set)
	Count       int64         // stop after this many events; 0: no limit
	Batch       int           // HTTP: events per request (default 500)
	Connections int           // HTTP: concurrent connections (default 8, at most Devices)
	Inflight    int           // MQTT: unacknowledged messages per device (default 1)

	// NodeBinary is the holdfast binary to start when Target is empty;
	// NodeArgs are added after `run --data-dir … --http-addr 127.0.0.1:0
	// --mqtt-addr 127.0.0.1:0`, so they may override those.
	NodeBinary string
	NodeArgs   []string
	KeepData   bool // keep the started node's data directory

	Progress io.Writer // progress bar (nil: none)
	Notices  io.Writer // one-line notices about the run (nil: none)

	// onAck, if set, is called for each acknowledged event. Test-only; it
	// must be safe for concurrent use.
	onAck func(deviceID string, ts int64, value float64)
}

// NoMetrics as HTTPTarget: the MQTT target is not holdfast; read no /metrics.
const NoMetrics = "none"

// Defaults.
const (
	DefaultDevices     = 100
	DefaultDuration    = 10 * time.Second
	DefaultBatch       = 500
	DefaultConnections = 8
	DefaultInflight    = 1
)

// drainTimeout bounds how long, once sending stops, the bench waits for
// acknowledgements still outstanding before counting them as timeouts.
const drainTimeout = 30 * time.Second

func (o Options) withDefaults() Options {
	if o.Transport == "" {
		o.Transport = TransportHTTP
	}
	if o.Devices == 0 {
		o.Devices = DefaultDevices
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	if o.Connections == 0 {
		o.Connections = DefaultConnections
	}
	o.Connections = min(o.Connections, max(o.Devices, 1))
	if o.Inflight == 0 {
		o.Inflight = DefaultInflight
	}
	if o.Transport == TransportMQTT && o.Target != "" && o.HTTPTarget == "" {
		if host, _, err := net.SplitHostPort(o.Target); err == nil {
			o.HTTPTarget = net.JoinHostPort(host, "8080")
		}
	}
	return o
}

// Validate reports options that cannot work, naming the flag.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.Transport != TransportHTTP && o.Transport != TransportMQTT {
		bad("--transport: %q must be http or mqtt", o.Transport)
	}
	if o.Devices < 1 || o.Devices > 1_000_000 {
		bad("--devices: %d must be from 1 to 1000000", o.Devices)
	}
	if o.Rate < 0 {
		bad("--rate: %v must not be negative", o.Rate)
	}
	if o.Duration < 0 || o.Count < 0 {
		bad("--duration and --count must not be negative")
	}
	if o.Duration == 0 && o.Count == 0 {
		bad("--duration or --count must be set to bound the run")
	}
	if o.Batch < 1 || o.Batch > 100_000 {
		bad("--batch: %d must be from 1 to 100000", o.Batch)
	}
	if o.Connections < 1 {
		bad("--connections: %d must be at least 1", o.Connections)
	}
	if o.Inflight < 1 || o.Inflight > 1000 {
		bad("--inflight: %d must be from 1 to 1000", o.Inflight)
	}
	if o.CompareBroker != "" && o.Transport != TransportMQTT {
		bad("--compare-broker: needs --transport mqtt")
	}
	if o.CompareJetStream && o.Transport != TransportHTTP {
		bad("--compare-jetstream: needs --transport http")
	}
	for name, addr := range map[string]string{"--target": o.Target, "--http-target": o.HTTPTarget, "--compare-broker": o.CompareBroker} {
		if addr == "" || (name == "--http-target" && addr == NoMetrics) {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s: %q is not host:port", name, addr)
		}
	}
	if o.Target == "" && o.NodeBinary == "" {
		bad("no --target and no holdfast binary to start a node with")
	}
	return errors.Join(errs...)
}

// maxSeconds bounds the per-second series; later acks count in the last slot.
const maxSeconds = 24 * 3600

// run is the state shared by a transport's workers during one run.
type run struct {
	opts  Options
	sched *schedule // set by begin, before any worker starts

	sent  atomic.Int64
	acked atomic.Int64
	slots []atomic.Int64 // acks by second since sched.start

	mu       sync.Mutex
	errs     map[string]int64  // events not acknowledged by kind; guarded by mu
	examples map[string]string // the first error of each kind; guarded by mu
}

func newRun(o Options) *run {
	return &run{opts: o, slots: make([]atomic.Int64, maxSeconds), errs: map[string]int64{}, examples: map[string]string{}}
}

// begin starts the run's clock.
func (r *run) begin(start time.Time) { r.sched = newSchedule(start, r.opts.Rate, r.opts.Count) }

// ack counts n events acknowledged at t.
func (r *run) ack(t time.Time, n int) {
	r.acked.Add(int64(n))
	sec := min(int(t.Sub(r.sched.start)/time.Second), len(r.slots)-1)
	r.slots[max(sec, 0)].Add(int64(n))
}

// fail counts n events that were not acknowledged under kind, a short
// snake_case name; err is an example kept for the report.
func (r *run) fail(kind string, n int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs[kind] += int64(n)
	if _, ok := r.examples[kind]; !ok && err != nil {
		r.examples[kind] = err.Error()
	}
}

func (r *run) errors() (counts map[string]int64, examples map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.errs), maps.Clone(r.examples)
}

// driver sends one transport's load.
type driver interface {
	// connect prepares connections before the clock starts.
	connect(ctx context.Context) error
	// load sends events until the schedule is exhausted or ctx is done, and
	// returns once every event sent is acknowledged or failed; hard abandons
	// what is still outstanding.
	load(ctx, hard context.Context)
	// latency returns ack latencies and, at a fixed rate, how late sends were.
	latency() (ack, lag *histogram)
	close()
}

// Run generates the load Options describe and reports what the node did. It
// returns a report whenever the load ran, with an error if the run could not
// be completed or the node misbehaved; events the node refused are counted in
// the report's Errors, not returned as an error.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	rep, err := runOnce(ctx, o)
	if err == nil && o.CompareJetStream {
		return compareJetStream(ctx, o, rep)
	}
	if err != nil || o.CompareBroker == "" {
		return rep, err
	}
	c := o
	c.Target, c.HTTPTarget, c.CompareBroker, c.NodeBinary, c.NodeArgs = o.CompareBroker, NoMetrics, "", "", nil
	if o.Notices != nil {
		fmt.Fprintf(o.Notices, "bench: the same load against the broker at %s to compare\n", o.CompareBroker)
	}
	cmp, err := runOnce(ctx, c)
	if cmp != nil {
		cmp.Compared = true
		rep.Compare = cmp
		if cmp.Throughput > 0 {
			rep.CompareRatio = math.Round(rep.Throughput/cmp.Throughput*100) / 100
		}
	}
	if err != nil {
		return rep, fmt.Errorf("the broker to compare with, %s: %w", o.CompareBroker, err)
	}
	return rep, nil
}

// runOnce is one run of the load against one target.
func runOnce(ctx context.Context, o Options) (rep *Report, err error) {
	notice := func(format string, args ...any) {
		if o.Notices != nil {
			fmt.Fprintf(o.Notices, "bench: "+format+"\n", args...)
		}
	}

	rep = &Report{Transport: o.Transport, Devices: o.Devices, Rate: o.Rate, Count: o.Count, DurationLimit: o.Duration.Seconds()}
	loadAddr, metricsAddr := o.Target, o.Target
	switch o.Transport {
	case TransportMQTT:
		metricsAddr = o.HTTPTarget
	case transportJetStream:
		metricsAddr = NoMetrics
	}
	var node *nodeProcess
	if o.Target == "" {
		if node, err = startNode(ctx, o.NodeBinary, o.NodeArgs, o.KeepData); err != nil {
			return nil, err
		}
		defer func() {
			if stopErr := node.stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}()
		loadAddr, metricsAddr = node.httpAddr, node.httpAddr
		if o.Transport == TransportMQTT {
			if node.mqttAddr == "" {
				return nil, errors.New("the node started without an MQTT listener")
			}
			loadAddr = node.mqttAddr
		}
		rep.NodeStarted, rep.NodePID = true, node.pid()
		if o.KeepData {
			rep.DataDir = node.dataDir
		}
		notice("started node pid %d: http %s, mqtt %s, data %s", node.pid(), node.httpAddr, node.mqttAddr, node.dataDir)
		// The run ends early if the node dies.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-node.exited:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	rep.Target = loadAddr

	sc := newScraper(metricsAddr, o.Token)
	defer sc.close()
	before, beforeErr := sc.scrape(ctx)
	if beforeErr != nil {
		rep.RSS.Error = beforeErr.Error()
		if !errors.Is(beforeErr, errNoMetrics) {
			notice("no node memory or counters: %v", beforeErr)
		}
	} else {
		rep.RSS.IdleBytes = uint64(before.rss)
	}

	r := newRun(o)
	var d driver
	switch o.Transport {
	case TransportHTTP:
		rep.Connections, rep.Batch, rep.Latency.Per = o.Connections, o.Batch, "batch"
		d = newHTTPDriver(r, loadAddr)
	case TransportMQTT:
		rep.Connections, rep.Inflight, rep.Latency.Per = o.Devices, o.Inflight, "message"
		md := newMQTTDriver(r, loadAddr)
		if b := md.refill(); b > 1 {
			rep.AckBatch = b
		}
		d = md
	case transportJetStream:
		rep.Connections, rep.Batch, rep.Latency.Per = o.Connections, o.Batch, "batch"
		jd, err := newJetStreamDriver(r, loadAddr)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", loadAddr, err)
		}
		d = jd
	}
	defer d.close()
	if err := d.connect(ctx); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", loadAddr, err)
	}

	// The clock starts once every connection is up. Sending stops when soft
	// is done: at the deadline, or when the run is interrupted. Acks still
	// outstanding are then awaited until hard is cancelled, drainTimeout later.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	start := time.Now()
	user0, sys0 := selfCPU()
	r.begin(start)
	soft := ctx
	if o.Duration > 0 {
		var cancel context.CancelFunc
		soft, cancel = context.WithDeadline(ctx, start.Add(o.Duration))
		defer cancel()
	}

	samplerCtx, stopSamplers := context.WithCancel(ctx)
	var samplers sync.WaitGroup
	rss := &rssSampler{sc: sc}
	if node != nil {
		rss.pid = node.pid()
	}
	if beforeErr == nil {
		samplers.Go(func() { rss.run(samplerCtx) })
	}
	if o.Progress != nil {
		samplers.Go(func() { progress(samplerCtx, o.Progress, r) })
	}

	loaded := make(chan struct{})
	go func() {
		d.load(soft, hard)
		close(loaded)
	}()
	select {
	case <-loaded:
	case <-soft.Done():
		select {
		case <-loaded:
		case <-time.After(drainTimeout):
			cancelHard()
			<-loaded
		}
	}
	elapsed := time.Since(start)
	user1, sys1 := selfCPU()
	benchUser, benchSys := user1-user0, sys1-sys0
	benchCPU := benchUser + benchSys
	stopSamplers()
	samplers.Wait()

	rep.fill(r, d, elapsed)
	rep.CPU.Cores = runtime.NumCPU()
	rep.CPU.Bench = math.Round(benchCPU.Seconds()/elapsed.Seconds()*100) / 100
	if rep.Acked > 0 && benchCPU > 0 {
		perEvent := func(d time.Duration) float64 { return math.Round(float64(d)/1e3/float64(rep.Acked)*100) / 100 }
		rep.CPU.BenchUSPerEvent = perEvent(benchCPU)
		rep.CPU.BenchUserUSPerEvent, rep.CPU.BenchSysUSPerEvent = perEvent(benchUser), perEvent(benchSys)
	}
	rep.RSS.Samples, rep.RSS.PeakBytes = rss.samples, rss.peak
	if beforeErr == nil {
		if after, err := sc.scrape(context.WithoutCancel(ctx)); err == nil {
			rep.RSS.FinalBytes = uint64(after.rss)
			rep.RSS.PeakBytes = max(rep.RSS.PeakBytes, rep.RSS.FinalBytes)
			rep.checkNodeCounters(o.Transport, before, after)
			rep.CPU.Node = math.Round((after.cpu-before.cpu)/elapsed.Seconds()*100) / 100
		}
	}
	if node != nil {
		rep.RSS.HWMBytes = node.peakRSS()
		select {
		case <-node.exited:
			return rep, fmt.Errorf("the node exited during the run (%v); its last words:\n%s", node.waitErr, node.tail)
		default:
		}
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("run interrupted: %w", context.Cause(ctx))
	}
	return rep, nil
}
