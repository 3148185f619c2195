package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-edge/holdfast/internal/clock"
)

// FloodOptions configure `holdfast bench flood`: one node with
// limits.device_rate, Devices devices each sending at EventRate over HTTP
// (one device per request, as real devices do) or MQTT (one connection per
// device, flood_mqtt.go), and in alternate phases one more device flooding
// at Factor times its limit. Zero fields take the defaults noted.
type FloodOptions struct {
	Binary     string        // the holdfast binary to start
	Devices    int           // the devices sending normally (default 200)
	DeviceRate float64       // limits.device_rate (default 100 events/s)
	EventRate  float64       // each normal device's rate (default DeviceRate/2)
	Factor     float64       // the flood, times DeviceRate (default 20)
	Batch      int           // events per request (default 10)
	Phase      time.Duration // each phase (default 10s)
	Rounds     int           // pairs of phases, without then with the flood (default 2)
	Transport  string        // "http" (default) or "mqtt"
	// MQTTVersion is the MQTT protocol of every device: 3 (3.1.1, the
	// default: the flood is slowed by held acks) or 5 (refused with 0x97).
	MQTTVersion int
	Notices     io.Writer
}

func (o FloodOptions) withDefaults() FloodOptions {
	if o.Devices == 0 {
		o.Devices = 200
	}
	if o.DeviceRate == 0 {
		o.DeviceRate = 100
	}
	if o.EventRate == 0 {
		o.EventRate = o.DeviceRate / 2
	}
	if o.Factor == 0 {
		o.Factor = 20
	}
	if o.Batch == 0 {
		o.Batch = 10
	}
	if o.Phase == 0 {
		o.Phase = 10 * time.Second
	}
	if o.Rounds == 0 {
		o.Rounds = 2
	}
	if o.Transport == "" {
		o.Transport = "http"
	}
	if o.MQTTVersion == 0 {
		o.MQTTVersion = 3
	}
	return o
}

// FloodPhase is what the normal devices saw over every phase of one kind.
type FloodPhase struct {
	Flood        bool    `json:"flood"`
	Seconds      float64 `json:"seconds"`
	Acked        int64   `json:"acked"`          // the normal devices' events acknowledged
	Failed       int64   `json:"failed"`         // the normal devices' events not acknowledged
	EventsPerSec float64 `json:"events_per_sec"` // Acked / Seconds
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	// The flooder: events due on its schedule (over MQTT, a message not sent
	// because its window of floodWindow in flight was full is due, not
	// sent), sent, accepted, and refused: HTTP requests answered 429, MQTT 5
	// messages answered 0x97.
	FloodDue      int64 `json:"flood_due"`
	FloodSent     int64 `json:"flood_sent"`
	FloodAccepted int64 `json:"flood_accepted"`
	Flood429      int64 `json:"flood_refused"`
	// Failures are the normal devices' failed requests by kind (http_429, error).
	Failures map[string]int64 `json:"failures,omitempty"`
}

// FloodReport compares the normal devices without and with the flood.
type FloodReport struct {
	Options         FloodOptions `json:"-"`
	Without, With   FloodPhase
	ThroughputRatio float64 `json:"throughput_ratio"` // With / Without
	P99Ratio        float64 `json:"p99_ratio"`
}

// RunFlood starts a node with the rate limit and plays the phases.
func RunFlood(ctx context.Context, o FloodOptions) (*FloodReport, error) {
	o = o.withDefaults()
	if o.Transport != "http" && o.Transport != "mqtt" {
		return nil, fmt.Errorf("bench flood: transport %q: want http or mqtt", o.Transport)
	}
	if o.Transport == "mqtt" && o.MQTTVersion != 3 && o.MQTTVersion != 5 {
		return nil, fmt.Errorf("bench flood: MQTT version %d: want 3 (3.1.1) or 5", o.MQTTVersion)
	}
	dir, err := os.MkdirTemp("", "holdfast-flood-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "holdfast.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil,
		// Every device comes from 127.0.0.1: let the per-source limit
		// take them all at once.
		"limits:\n  device_rate: %g\nhttp:\n  max_concurrent_per_source: %d\n", o.DeviceRate, o.Devices+64), 0o600); err != nil {
		return nil, err
	}
	node, err := startNode(ctx, o.Binary, []string{"--config", cfg}, false)
	if err != nil {
		return nil, err
	}
	defer node.stop()
	if o.Transport == "mqtt" {
		return runFloodMQTT(ctx, node.mqttAddr, o)
	}
	t := &http.Transport{MaxIdleConns: o.Devices + 8, MaxIdleConnsPerHost: o.Devices + 8, IdleConnTimeout: time.Minute, DisableCompression: true}
	defer t.CloseIdleConnections()
	client := &http.Client{Transport: t, Timeout: 30 * time.Second}
	url := "http://" + node.httpAddr + "/v1/events"

	play := func(o FloodOptions, flood bool, tally *floodTally) error {
		return floodPhase(ctx, client, url, o, flood, tally)
	}
	return playFlood(o, play)
}

// playFlood plays a warm-up phase, not counted, then the rounds of phases
// without and with the flood, and compares them.
func playFlood(o FloodOptions, play func(o FloodOptions, flood bool, tally *floodTally) error) (*FloodReport, error) {
	rep := &FloodReport{Options: o}
	// A warm-up, not counted: connections, the node's first segments.
	warm := o
	warm.Phase = min(o.Phase, 2*time.Second)
	if err := play(warm, false, new(floodTally)); err != nil {
		return nil, err
	}
	var without, with floodTally
	for round := range o.Rounds {
		for _, flood := range []bool{false, true} {
			tally := &without
			if flood {
				tally = &with
			}
			if o.Notices != nil {
				fmt.Fprintf(o.Notices, "bench flood: round %d, flood %v, %v\n", round+1, flood, o.Phase)
			}
			if err := play(o, flood, tally); err != nil {
				return nil, err
			}
		}
	}
	rep.Without, rep.With = without.phase(false), with.phase(true)
	if rep.Without.EventsPerSec > 0 {
		rep.ThroughputRatio = rep.With.EventsPerSec / rep.Without.EventsPerSec
	}
	if rep.Without.P99Ms > 0 {
		rep.P99Ratio = rep.With.P99Ms / rep.Without.P99Ms
	}
	return rep, nil
}

type floodTally struct {
	seconds                       float64
	acked, failed                 atomic.Int64
	floodDue                      atomic.Int64
	floodSent, floodAcc, flood429 atomic.Int64
	lat                           histogram
	mu                            sync.Mutex
	failures                      map[string]int64 // the normal devices' failed requests by kind; guarded by mu
}

func (f *floodTally) fail(kind string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures == nil {
		f.failures = map[string]int64{}
	}
	f.failures[kind]++
}

func (f *floodTally) phase(flood bool) FloodPhase {
	p := FloodPhase{Flood: flood, Seconds: f.seconds, Acked: f.acked.Load(), Failed: f.failed.Load(),
		P50Ms: ms(f.lat.quantile(0.5)), P99Ms: ms(f.lat.quantile(0.99)),
		FloodDue: f.floodDue.Load(), FloodSent: f.floodSent.Load(), FloodAccepted: f.floodAcc.Load(), Flood429: f.flood429.Load(), Failures: f.failures}
	if p.Seconds > 0 {
		p.EventsPerSec = float64(p.Acked) / p.Seconds
	}
	return p
}

// floodPhase plays one phase: every normal device posts a batch every
// Batch/EventRate, on a fixed schedule (a late answer does not delay the
// next request's due time; latency runs from the due time); with flood, the
// flooder does the same at Factor×DeviceRate, ignoring its 429s.
func floodPhase(ctx context.Context, client *http.Client, url string, o FloodOptions, flood bool, tally *floodTally) error {
	ctx, cancel := context.WithTimeout(ctx, o.Phase)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	names := make([]string, o.Devices)
	for i := range names {
		names[i] = fmt.Sprintf("device-%04d", i)
	}
	playNormal(ctx, &wg, start, o.Devices, o, tally, func(i int, seq *int) (int, string, bool) {
		accepted, status, err := postFlood(ctx, client, url, names[i], seq, o.Batch)
		switch {
		case err != nil:
			return accepted, "error", false
		case status != http.StatusOK:
			return accepted, "http_" + strconv.Itoa(status), false
		}
		return accepted, "", false
	})
	if flood {
		// Four connections, so that the flood keeps its rate while answers
		// take longer than its interval.
		const floodConns = 4
		floodEvery := time.Duration(float64(o.Batch*floodConns) / (o.Factor * o.DeviceRate) * float64(time.Second))
		for c := range floodConns {
			wg.Go(func() {
				seq := c * 1_000_000_000
				// Every slot of the schedule before the phase's end is due,
				// whether or not a slow answer let the flooder reach it.
				end := start.Add(o.Phase)
				due := start.Add(floodEvery * time.Duration(c) / floodConns)
				defer func() {
					for ; due.Before(end); due = due.Add(floodEvery) {
						tally.floodDue.Add(int64(o.Batch))
					}
				}()
				for ; ; due = due.Add(floodEvery) {
					if !clock.Sleep(ctx, time.Until(due)) {
						return
					}
					accepted, status, _ := postFlood(ctx, client, url, "flooder", &seq, o.Batch)
					if ctx.Err() != nil {
						return // cut off by the phase's end: due, not sent
					}
					tally.floodDue.Add(int64(o.Batch))
					tally.floodSent.Add(int64(o.Batch))
					tally.floodAcc.Add(int64(accepted))
					if status == http.StatusTooManyRequests {
						tally.flood429.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	tally.seconds += o.Phase.Seconds()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// playNormal starts the normal devices of a phase, each in its own
// goroutine on wg: device i sends a batch every Batch/EventRate on a fixed
// schedule from start (the devices' first batches spread over one
// interval; a late answer does not delay the next due time), until ctx
// ends. send sends device i's batch (seq is the device's own, for event
// ids) and returns how many events were accepted, the failure to count if
// not all were ("" none) and whether the device can send no more. Latency
// runs from each batch's due time to send's return; a batch cut off by the
// phase's end is not counted.
func playNormal(ctx context.Context, wg *sync.WaitGroup, start time.Time, devices int, o FloodOptions, tally *floodTally,
	send func(i int, seq *int) (accepted int, fail string, done bool)) {
	every := time.Duration(float64(o.Batch) / o.EventRate * float64(time.Second))
	for i := range devices {
		first := start.Add(every * time.Duration(i) / time.Duration(devices))
		wg.Go(func() {
			seq := 0
			for due := first; ; due = due.Add(every) {
				if !clock.Sleep(ctx, time.Until(due)) {
					return
				}
				accepted, fail, done := send(i, &seq)
				if ctx.Err() != nil {
					return
				}
				tally.lat.record(time.Since(due))
				tally.acked.Add(int64(accepted))
				tally.failed.Add(int64(o.Batch - accepted))
				if fail != "" {
					tally.fail(fail)
				}
				if done {
					return
				}
			}
		})
	}
}

// postFlood posts n events of device and returns how many were accepted.
func postFlood(ctx context.Context, client *http.Client, url, device string, seq *int, n int) (int, int, error) {
	var b bytes.Buffer
	ts := time.Now().UnixMilli()
	for range n {
		*seq++
		b.WriteString(`{"id":"`)
		b.WriteString(device)
		b.WriteByte('-')
		b.WriteString(strconv.Itoa(*seq))
		fmt.Fprintf(&b, `","device_id":%q,"stream":"telemetry","ts":%d,"value":%d}`+"\n", device, ts, *seq)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, &b)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var r ingestResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, resp.StatusCode, err
	}
	return r.Accepted, resp.StatusCode, nil
}

// WriteText prints the report.
func (r *FloodReport) WriteText(w io.Writer) error {
	o := r.Options
	per, refused := "batches of %d, one device per request", "429s"
	if o.Transport == "mqtt" {
		per, refused = "MQTT "+map[int]string{3: "3.1.1", 5: "5"}[o.MQTTVersion]+" QoS 1, %d messages at a time, one connection per device", "0x97s"
	}
	_, err := fmt.Fprintf(w, `flood: %d devices at %g events/s each (`+per+`), limit %g events/s per device;
       the flood: one device at %g events/s (%g× its limit); %d rounds of %v without, then %v with
phase      normal events/s   acked     failed  p50 ms   p99 ms   flood due      sent  accepted  %s
without    %14.0f  %8d  %8d  %7.2f  %7.2f
with       %14.0f  %8d  %8d  %7.2f  %7.2f  %9d  %8d  %8d  %5d
ratio with/without: throughput %.3f, p99 %.2f
failed requests of the normal devices: without %v, with %v
`, o.Devices, o.EventRate, o.Batch, o.DeviceRate, o.Factor*o.DeviceRate, o.Factor, o.Rounds, o.Phase, o.Phase, refused,
		r.Without.EventsPerSec, r.Without.Acked, r.Without.Failed, r.Without.P50Ms, r.Without.P99Ms,
		r.With.EventsPerSec, r.With.Acked, r.With.Failed, r.With.P50Ms, r.With.P99Ms, r.With.FloodDue, r.With.FloodSent, r.With.FloodAccepted, r.With.Flood429,
		r.ThroughputRatio, r.P99Ratio, r.Without.Failures, r.With.Failures)
	return err
}
