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
)

// BenchmarkFastPath measures the latency trigger's action: the same
// saturating HTTP load (16 clients, 100 events a request from 1 000 devices,
// the default windows and 10 alert rules) against a fresh node with the fast
// path off and on, alternately, 3 s each, b.N pairs. It reports each side's
// acked events/s and the p99 of the request latency the clients saw, and the
// ratios on/off, so that one run compares them on the same machine state.
// HOLDFAST_BENCH_SHARE sets degradation.fast_path_share (default 0.25).
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
	run := func(on bool) (rate float64, p99 time.Duration, lag uint64) {
		cfg := config.Default()
		cfg.Alerts.Rules = tenRules()
		cfg.DataDir = b.TempDir()
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.MQTT.Mode = "off"
		cfg.Buffer.MaxBytes = 8 << 30
		if v := os.Getenv("HOLDFAST_BENCH_SHARE"); v != "" {
			cfg.Degradation.FastPathShare, _ = strconv.ParseFloat(v, 64)
		}
		n, err := Start(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		n.deg.pacer.SetOn(on)
		url := "http://" + n.HTTPAddr() + "/v1/events"
		tr := &http.Transport{MaxIdleConnsPerHost: clients}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		end := time.Now().Add(phase)
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for r := c; time.Now().Before(end); r += clients {
					t0 := time.Now()
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
		// Alternate which goes first, so that neither always meets a
		// warmer or a busier machine.
		for k := range 2 {
			on := (i+k)%2 == 1
			r, p, lag := run(on)
			if on {
				rateOn, p99On, lagOn = rateOn+r, p99On+p, lagOn+float64(lag)
			} else {
				rateOff, p99Off = rateOff+r, p99Off+p
			}
		}
	}
	nf := float64(b.N)
	b.ReportMetric(rateOff/nf, "events/s-off")
	b.ReportMetric(rateOn/nf, "events/s-on")
	b.ReportMetric(float64(p99Off.Milliseconds())/nf, "p99-ms-off")
	b.ReportMetric(float64(p99On.Milliseconds())/nf, "p99-ms-on")
	b.ReportMetric(rateOn/rateOff, "rate-on/off")
	b.ReportMetric(float64(p99On)/float64(p99Off), "p99-on/off")
	b.ReportMetric(lagOn/nf, "lag-records-on")
}
