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
// stopped (lag-records). The ",dedup_without_id=off" pairs leave out content
// de-duplication, whose cost at its bound of keys (ingest.dedup_max_entries)
// would otherwise dilute the processor's share.
func BenchmarkHTTPIngest(b *testing.B) {
	b.Run("processing=off", func(b *testing.B) { benchHTTPIngest(b, false, true) })
	b.Run("processing=on", func(b *testing.B) { benchHTTPIngest(b, true, true) })
	b.Run("processing=off,dedup_without_id=off", func(b *testing.B) { benchHTTPIngest(b, false, false) })
	b.Run("processing=on,dedup_without_id=off", func(b *testing.B) { benchHTTPIngest(b, true, false) })
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

func benchHTTPIngest(b *testing.B, processing, contentDedup bool) {
	cfg := config.Default()
	if !contentDedup {
		cfg.Ingest.DedupWithoutID = "off"
	}
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
	// Every request's events are new: request r carries one event from each
	// device at ts base + r·100 ms, written into the client's body in place
	// (the ts fields have a fixed width), so content de-duplication
	// (ingest.dedup_without_id) drops none of them and the windows advance.
	base := time.Now().Add(-6 * time.Hour).UnixMilli()
	bodies := make([][]byte, clients)
	tsAt := make([][]int, clients) // where each event's ts digits start
	for c := range bodies {
		var buf []byte
		for j := range batch {
			buf = append(buf, `{"device_id":"dev-`...)
			buf = strconv.AppendInt(buf, int64(j), 10)
			buf = append(buf, `","stream":"temperature","ts":`...)
			tsAt[c] = append(tsAt[c], len(buf))
			buf = strconv.AppendInt(buf, base, 10)
			buf = append(buf, `,"value":`...)
			buf = strconv.AppendFloat(buf, 20+float64((c*batch+j)%100)/10, 'f', -1, 64)
			buf = append(buf, "}\n"...)
		}
		bodies[c] = buf
	}
	width := len(strconv.FormatInt(base, 10))
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
			var digits []byte
			for r := c; r < requests; r += clients {
				digits = strconv.AppendInt(digits[:0], base+int64(r)*100, 10)
				if len(digits) != width {
					b.Error("ts out of the fixed width")
					return
				}
				for _, at := range tsAt[c] {
					copy(bodies[c][at:], digits)
				}
				resp, err := client.Post(url, "application/x-ndjson", bytes.NewReader(bodies[c]))
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
	if got := n.buf.DurableOffset(); got < uint64(requests*batch) {
		b.Fatalf("the log holds %d records for %d events sent: some were dropped", got, requests*batch)
	}
	if processing {
		b.ReportMetric(float64(n.proc.Status().Lag), "lag-records")
	}
	// The share of the bytes the log's readers (the processor, the alert
	// notifiers) read that came from the log's tail in memory.
	if mem, file := logReadBytes(b, n); mem+file > 0 {
		b.ReportMetric(100*mem/(mem+file), "%read-from-memory")
	}
}

// logReadBytes returns holdfast_log_read_bytes_total from memory and from file.
func logReadBytes(b *testing.B, n *Node) (mem, file float64) {
	mfs, err := n.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "holdfast_log_read_bytes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				switch lp.GetName() + "=" + lp.GetValue() {
				case "from=memory":
					mem = m.GetCounter().GetValue()
				case "from=file":
					file = m.GetCounter().GetValue()
				}
			}
		}
	}
	return mem, file
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
