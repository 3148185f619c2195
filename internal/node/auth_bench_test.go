package node

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// BenchmarkHTTPIngestSecurity measures durable HTTP ingest through a whole
// in-process node (processing off) without and with device authentication
// (a bearer token per request) and TLS, in one run: 8 clients, one device
// each, posting NDJSON batches of 100 events on keep-alive connections. It
// reports events/s and the p99 of a request's latency.
func BenchmarkHTTPIngestSecurity(b *testing.B) {
	for _, c := range []struct {
		name       string
		auth, tls_ bool
	}{{"plain", false, false}, {"auth", true, false}, {"tls", false, true}, {"auth+tls", true, true}} {
		b.Run(c.name, func(b *testing.B) { benchSecureIngest(b, c.auth, c.tls_) })
	}
}

func benchSecureIngest(b *testing.B, withAuth, withTLS bool) {
	const clients, batch = 8, 100
	dir := b.TempDir()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Mode = "off"
	cfg.Windows.Enabled = false
	cfg.Buffer.MaxBytes = 8 << 30
	cfg.Buffer.SegmentBytes = 64 << 20
	tokens := make([]string, clients)
	if withAuth {
		cfg.Security.Devices = filepath.Join(dir, "devices.yaml")
		for i := range tokens {
			var err error
			if tokens[i], err = auth.AddDevice(cfg.Security.Devices, fmt.Sprint("dev-", i), nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	tc := &tls.Config{}
	scheme := "http"
	if withTLS {
		ca := tlstest.NewCA(b, "bench CA")
		cfg.Security.TLS.Cert, cfg.Security.TLS.Key = ca.Server(b, "edge").Write(b, dir, "server")
		tc.RootCAs = ca.Pool()
		scheme = "https"
	}
	n, err := Start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ts := time.Now().UnixMilli()
	bodies := make([][]byte, clients)
	for i := range bodies {
		for j := range batch {
			bodies[i] = fmt.Appendf(bodies[i], `{"device_id":"dev-%d","stream":"temperature","ts":%d,"value":%s}`+"\n",
				i, ts+int64(j), strconv.FormatFloat(20+float64(j%100)/10, 'f', -1, 64))
		}
	}
	url := scheme + "://" + n.HTTPAddr() + "/v1/events"
	tr := &http.Transport{MaxIdleConnsPerHost: clients, TLSClientConfig: tc, ForceAttemptHTTP2: false}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	requests := b.N/batch + 1
	lat := make([][]time.Duration, clients)
	// One request per client first: the TLS handshakes and each token's one
	// argon2id verification (cached after) are not the steady state measured.
	run := func(requests int) {
		var wg sync.WaitGroup
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := c; r < requests; r += clients {
					req, _ := http.NewRequest("POST", url, bytes.NewReader(bodies[c]))
					req.Header.Set("Content-Type", "application/x-ndjson")
					if tokens[c] != "" {
						req.Header.Set("Authorization", "Bearer "+tokens[c])
					}
					t0 := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					lat[c] = append(lat[c], time.Since(t0))
					if resp.StatusCode != 200 {
						b.Error(fmt.Sprint("status ", resp.StatusCode))
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	run(clients)
	clear(lat)
	b.ResetTimer()
	run(requests)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(requests*batch)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}
