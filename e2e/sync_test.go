package e2e

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// cloudMessages reads every message of a JetStream stream and returns, per
// Holdfast-Offset of node, how often it is stored and the record payloads.
func cloudMessages(t *testing.T, url, stream, node string) (map[uint64]int, map[uint64][]byte) {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	counts, payloads := map[uint64]int{}, map[uint64][]byte{}
	if info.State.Msgs == 0 {
		return counts, payloads
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"holdfast." + node + ".>"}})
	require.NoError(t, err)
	for {
		batch, err := cons.FetchNoWait(1000)
		require.NoError(t, err)
		n := 0
		for m := range batch.Messages() {
			n++
			off, err := strconv.ParseUint(m.Headers().Get(cloud.HeaderOffset), 10, 64)
			require.NoError(t, err)
			counts[off]++
			payloads[off] = m.Data()
		}
		if n == 0 {
			return counts, payloads
		}
	}
}

// TestSyncSurvivesFaultsAndCrashes runs the real binary against an embedded
// JetStream cloud through toxiproxy: while HTTP load runs, the link gets
// latency, a bandwidth limit, connection resets, a timeout that swallows data
// and full outages, and the node is SIGKILLed during sync, 10 times. At the end
// the cloud holds exactly the events the node stored, each once — every
// acknowledged one among them — and the window results, each once.
func TestSyncSurvivesFaultsAndCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	const rounds = 10
	dir := t.TempDir()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer srv.Close()
	upstream := strings.TrimPrefix(srv.URL(), "nats://")
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	proxy := toxiproxy.NewProxy(api, "cloud", "127.0.0.1:0", upstream)
	require.NoError(t, proxy.Start())
	defer proxy.Stop()
	cloudURL := "nats://" + proxy.Listen

	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 13))
	t.Logf("seed %d", seed)
	faults := []string{
		`{"name":"f","type":"latency","stream":"downstream","attributes":{"latency":150,"jitter":100}}`,
		`{"name":"f","type":"bandwidth","stream":"upstream","attributes":{"rate":64}}`,
		`{"name":"f","type":"reset_peer","stream":"upstream","attributes":{"timeout":300}}`,
		`{"name":"f","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`,
		"down",
		"",
	}
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, "windows:\n  sizes: [1s]\n  allowed_lateness: 100ms\ncloud:\n  max_delay: 20ms\n  batch_records: 200\n")
	led := &ledger{sent: map[string]sentEvent{}, acked: map[string]bool{}}
	for round := range rounds {
		p := start(t, data, "--config", cfg, "--cloud-url", cloudURL, "--node-id", "edge-7")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); httpLoad(p, led, round, w, stop) }()
		}
		f := faults[rng.IntN(len(faults))]
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		switch f {
		case "down":
			proxy.Stop()
		case "":
		default:
			_, err := proxy.Toxics.AddToxicJson(strings.NewReader(f))
			require.NoError(t, err)
		}
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()
		if f == "down" {
			require.NoError(t, proxy.Start())
		} else if f != "" {
			require.NoError(t, proxy.Toxics.RemoveToxic(context.Background(), "f"))
		}
	}

	// Heal the link, restart, and wait for the sink to drain.
	p := start(t, data, "--config", cfg, "--cloud-url", cloudURL, "--node-id", "edge-7")
	waitFor(t, "sync to drain", 120*time.Second, func() bool {
		var s struct {
			Sinks []struct {
				State string `json:"state"`
				Lag   uint64 `json:"lag_records"`
			} `json:"sinks"`
			Processing struct {
				Lag uint64 `json:"lag_records"`
			} `json:"processing"`
		}
		resp, err := http.Get(p.url("/v1/status"))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&s) != nil || len(s.Sinks) != 1 {
			return false
		}
		return s.Sinks[0].State == "connected" && s.Sinks[0].Lag == 0 && s.Processing.Lag == 0
	})
	stored := allEvents(t, p, "")
	windows := finalWindows(t, p)
	p.stop(t)

	counts, payloads := cloudMessages(t, srv.URL(), cloud.StreamEvents, "edge-7")
	for off, n := range counts {
		require.Equal(t, 1, n, "event record %d stored %d times in the cloud", off, n)
	}
	require.Len(t, counts, len(stored), "the cloud holds exactly the events the node stored")
	cloudIDs := map[string]bool{}
	for _, e := range stored {
		p, ok := payloads[e.Offset]
		require.True(t, ok, "event at offset %d missing from the cloud", e.Offset)
		ev, err := event.DecodeBinary(p)
		require.NoError(t, err)
		require.Equal(t, e.ID, ev.ID, "offset %d", e.Offset)
		cloudIDs[ev.ID] = true
	}
	for id := range led.acked {
		require.True(t, cloudIDs[id], "acknowledged event %s never reached the cloud", id)
	}

	rcounts, rpayloads := cloudMessages(t, srv.URL(), cloud.StreamResults, "edge-7")
	cloudWindows := map[string]int{}
	for off, n := range rcounts {
		require.Equal(t, 1, n, "result record %d stored %d times", off, n)
		if event.Type(rpayloads[off]) == event.TypeWindow {
			w, err := event.DecodeWindow(rpayloads[off])
			require.NoError(t, err)
			cloudWindows[w.ID()]++
		}
	}
	for _, w := range windows {
		require.Equal(t, 1, cloudWindows[w.ID], "window %s in the cloud", w.ID)
	}
	require.Len(t, cloudWindows, len(windows))
	t.Logf("%d crashes under faults: %d events acknowledged, %d stored, all in the cloud once; %d windows synced once",
		rounds, len(led.acked), len(stored), len(windows))
	require.Greater(t, len(led.acked), 1000)
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
}
