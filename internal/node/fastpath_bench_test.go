package node

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/degrade"
)

// BenchmarkFastPath measures the latency trigger's action on an HTTP load
// (16 clients, 100 events a request from 1 000 devices, the default windows
// and 10 alert rules), each phase 3 s against a fresh node with the fast path
// off (the latency trigger kept down) or on (taken up by the node's own
// measurement of a request before the load), alternately:
//   - flat out: acked events/s off and on, and how far processing fell
//     behind with it on;
//   - at 90 % of the rate the node took flat out without it: the p99 of the
//     request latency, from when each request was due.
//
// HOLDFAST_BENCH_SHARE sets degradation.fast_path_share.
//
//	go test ./internal/node -run '^$' -bench FastPath -benchtime 3x
func BenchmarkFastPath(b *testing.B) {
	const clients, batch, phase = 16, 100, 3 * time.Second
	bodies := make([][]byte, 64)
	ts := time.Now().UnixMilli()
	for i := range bodies {
		var buf []byte
		for j := range batch {
			buf = append(buf, `{"device_id":"dev-`...)
			buf = strconv.AppendInt(buf, int64((i*batch+j)%1000), 10)
			buf = append(buf, `","stream":"temperature","ts":`...)
			buf = strconv.AppendInt(buf, ts+int64(i*batch+j), 10)
			buf = append(buf, `,"value":`...)
			buf = strconv.AppendFloat(buf, 20+float64(j%100)/10, 'f', -1, 64)
			buf = append(buf, "}\n"...)
		}
		bodies[i] = buf
	}
	warm := []byte(`{"device_id":"warm","stream":"temperature","value":1}` + "\n")
	// run loads a fresh node for phase: flat out (offered 0), or at offered
	// events/s, each request's latency then counted from when it was due,
	// so that a node falling behind is charged for the queue.
	run := func(on bool, offered float64) (rate float64, p99 time.Duration, lag uint64) {
		cfg := config.Default()
		cfg.Alerts.Rules = tenRules()
		cfg.DataDir = b.TempDir()
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.MQTT.Mode = "off"
		cfg.Buffer.MaxBytes = 8 << 30
		// The bodies repeat: without this all but the first of each would
		// be dropped as retries, and there would be nothing to process.
		cfg.Ingest.DedupWithoutID = "off"
		// On: any ack takes the latency trigger up, and it never goes
		// down; off: it never goes up.
		cfg.Degradation.Triggers.Latency = degrade.TriggerOptions{Up: 1e9, Down: -1}
		if on {
			cfg.Degradation.Triggers.Latency.Up = 1e-9
		}
		if v := os.Getenv("HOLDFAST_BENCH_SHARE"); v != "" {
			cfg.Degradation.FastPathShare, _ = strconv.ParseFloat(v, 64)
		}
		n, err := Start(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		url := "http://" + n.HTTPAddr() + "/v1/events"
		tr := &http.Transport{MaxIdleConnsPerHost: clients}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		if on {
			// A request takes the trigger up (see cfg), through the
			// node's own measurement of its acks, before the load starts.
			for !n.deg.pacer.On() {
				resp, err := client.Post(url, "application/x-ndjson", bytes.NewReader(warm))
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				time.Sleep(50 * time.Millisecond)
			}
		}
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		begin := time.Now()
		end := begin.Add(phase)
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for r := c; time.Now().Before(end); r += clients {
					t0 := time.Now()
					if offered > 0 {
						t0 = begin.Add(time.Duration(float64(r*batch) / offered * float64(time.Second)))
						if !t0.Before(end) {
							break
						}
						time.Sleep(time.Until(t0))
					}
					resp, err := client.Post(url, "application/x-ndjson", bytes.NewReader(bodies[r%len(bodies)]))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		slices.Sort(lat)
		if len(lat) == 0 {
			b.Fatal("no request answered")
		}
		return float64(len(lat)*batch) / phase.Seconds(), lat[len(lat)*99/100], n.proc.Status().Lag
	}
	var rateOff, rateOn, lagOn float64
	var p99Off, p99On time.Duration
	for i := range b.N {
		// Flat out, then at 90 % of what the node without the fast path
		// took flat out. Alternate which goes first, so that neither always
		// meets a warmer or a busier machine.
		var sat float64
		for k := range 2 {
			on := (i+k)%2 == 1
			r, _, lag := run(on, 0)
			if on {
				rateOn, lagOn = rateOn+r, lagOn+float64(lag)
			} else {
				rateOff, sat = rateOff+r, r
			}
		}
		for k := range 2 {
			on := (i+k)%2 == 1
			_, p, lag := run(on, 0.9*sat)
			b.Logf("at %.0f events/s, fast path on=%v: p99 %v, processing lag %d", 0.9*sat, on, p, lag)
			if on {
				p99On += p
			} else {
				p99Off += p
			}
		}
	}
	nf := float64(b.N)
	b.ReportMetric(rateOff/nf, "events/s-off")
	b.ReportMetric(rateOn/nf, "events/s-on")
	b.ReportMetric(rateOn/rateOff, "rate-on/off")
	b.ReportMetric(lagOn/nf, "lag-records-on")
	b.ReportMetric(float64(p99Off.Milliseconds())/nf, "p99-ms-at-90%-off")
	b.ReportMetric(float64(p99On.Milliseconds())/nf, "p99-ms-at-90%-on")
	b.ReportMetric(float64(p99On)/float64(p99Off), "p99-on/off")
}
