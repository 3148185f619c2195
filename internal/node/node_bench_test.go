package node

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/config"
)

// BenchmarkHTTPIngest measures durable HTTP NDJSON ingest through a whole
// in-process node (real log on disk, real loopback HTTP), with 8 clients each
// posting batches of 1000 events from 1000 devices. The client runs in the
// same process, so the figure includes its cost. "processing=off" stores
// only; "processing=on" also runs the default windows (1m, 5m, 1h) and 10
// alert rules, and reports how far the processor was behind when the load
// stopped (lag-records).
func BenchmarkHTTPIngest(b *testing.B) {
	b.Run("processing=off", func(b *testing.B) { benchHTTPIngest(b, false) })
	b.Run("processing=on", func(b *testing.B) { benchHTTPIngest(b, true) })
}

// tenRules are the alert rules of the processing=on benchmark: five on raw
// values, five on window results, none of which fires on the benchmark data.
func tenRules() []alert.Rule {
	var rules []alert.Rule
	for i := range 5 {
		rules = append(rules,
			alert.Rule{Name: fmt.Sprint("raw-", i), Stream: "temperature", Op: ">", Threshold: float64(100 + i), ForCount: 3},
			alert.Rule{Name: fmt.Sprint("win-", i), Stream: "temperature", Source: alert.SourceWindow,
				Window: time.Minute, Aggregate: []string{"mean", "max", "p95", "count", "min"}[i], Op: ">", Threshold: 1e9})
	}
	return rules
}

func benchHTTPIngest(b *testing.B, processing bool) {
	cfg := config.Default()
	cfg.Windows.Enabled = processing
	if processing {
		cfg.Alerts.Rules = tenRules()
	}
	cfg.DataDir = b.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Mode = "off"
	cfg.Buffer.MaxBytes = 8 << 30
	cfg.Buffer.SegmentBytes = 64 << 20
	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()

	const clients, batch = 8, 1000
	bodies := make([][]byte, 16)
	ts := time.Now().UnixMilli()
	for i := range bodies {
		var buf []byte
		for j := range batch {
			buf = append(buf, `{"device_id":"dev-`...)
			buf = strconv.AppendInt(buf, int64((i*batch+j)%1000), 10)
			buf = append(buf, `","stream":"temperature","ts":`...)
			buf = strconv.AppendInt(buf, ts+int64(j), 10)
			buf = append(buf, `,"value":`...)
			buf = strconv.AppendFloat(buf, 20+float64(j%100)/10, 'f', -1, 64)
			buf = append(buf, "}\n"...)
		}
		bodies[i] = buf
	}
	url := "http://" + n.HTTPAddr() + "/v1/events"
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	requests := b.N/batch + 1
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := c; r < requests; r += clients {
				resp, err := client.Post(url, "application/x-ndjson", bytes.NewReader(bodies[r%len(bodies)]))
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Error(fmt.Sprint("status ", resp.StatusCode))
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(requests*batch)/b.Elapsed().Seconds(), "events/s")
	if processing {
		b.ReportMetric(float64(n.proc.Status().Lag), "lag-records")
	}
}

// BenchmarkMQTTIngest measures durable MQTT QoS 1 ingest through an
// in-process node with processing off: 200 device connections (paho, the
// same process) each publishing with one message in flight. Its profile shows
// where the node spends its time per message.
func BenchmarkMQTTIngest(b *testing.B) {
	cfg := config.Default()
	cfg.DataDir = b.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	cfg.Windows.Enabled = false
	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	const devices = 200
	clients := make([]mqtt.Client, devices)
	for i := range clients {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + n.MQTTAddr()).SetClientID(fmt.Sprint("bench-", i)))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatal("connect", tok.Error())
		}
		defer c.Disconnect(0)
		clients[i] = c
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("devices/dev-%d/temperature", i)
			for j := i; j < b.N; j += devices {
				if tok := c.Publish(topic, 1, false, strconv.Itoa(j%100)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					b.Error("publish", tok.Error())
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
