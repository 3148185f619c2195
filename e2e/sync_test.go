package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// arrival is one record as the far end saw it, in the order it arrived.
type arrival struct {
	offset uint64
	lane   string
	group  string // what order is kept within: a JetStream subject, or the whole far end
}

// received is what a sink's far end got: per offset, how often and the
// record's event id (events); per window id and per alert id/state, how often;
// and every arrival in order.
type received struct {
	events   map[uint64]int
	eventID  map[uint64]string
	windows  map[string]int
	alerts   map[string]int // id + "/" + firing|resolved
	arrivals []arrival
}

func newReceived() received {
	return received{events: map[uint64]int{}, eventID: map[uint64]string{}, windows: map[string]int{}, alerts: map[string]int{}}
}

// addRecord adds one log record (binary, as stored) that arrived.
func (r *received) addRecord(t *testing.T, off uint64, payload []byte) {
	switch event.Type(payload) {
	case event.TypeEvent:
		ev, err := event.DecodeBinary(payload)
		require.NoError(t, err)
		r.events[off]++
		r.eventID[off] = ev.ID
	case event.TypeWindow:
		w, err := event.DecodeWindow(payload)
		require.NoError(t, err)
		r.windows[w.ID()]++
	case event.TypeAlert:
		a, err := event.DecodeAlert(payload)
		require.NoError(t, err)
		r.alerts[alertKey(a.ID(), a.Firing)]++
	}
}

func alertKey(id string, firing bool) string {
	if firing {
		return id + "/firing"
	}
	return id + "/resolved"
}

// cloudMessages adds every record of node in a JetStream stream to r, in
// stream order, decoding the batch messages of docs/format/cloud.md.
func cloudMessages(t *testing.T, r *received, url, stream, node string) {
	t.Helper()
	cloudRecords(t, url, stream, node, func(rec cloud.BatchRecord, m jetstream.Msg) {
		r.addRecord(t, rec.Offset, rec.Payload)
		r.arrivals = append(r.arrivals, arrival{rec.Offset, m.Headers().Get(cloud.HeaderLane), m.Subject()})
	})
}

// cloudJS connects to the cloud at url until the test ends.
func cloudJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// cloudRecords calls fn with every record of node in a JetStream stream, in
// stream order, and the batch message that carried it.
func cloudRecords(t *testing.T, url, stream, node string, fn func(rec cloud.BatchRecord, m jetstream.Msg)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := cloudJS(t, url).Stream(ctx, stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	if info.State.Msgs == 0 {
		return
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{cloud.NodeFilter(node)}})
	require.NoError(t, err)
	for {
		batch, err := cons.FetchNoWait(1000)
		require.NoError(t, err)
		n := 0
		for m := range batch.Messages() {
			n++
			recs, err := cloud.DecodeBatch(m.Headers(), m.Data())
			require.NoError(t, err)
			for _, rec := range recs {
				fn(rec, m)
			}
		}
		if n == 0 {
			return
		}
	}
}

// faultTarget is one sink under test: the config that points the node at the
// proxy, where the proxy forwards to, and how to read what arrived.
type faultTarget struct {
	config   func(proxyAddr string) string
	upstream string
	collect  func(t *testing.T) received
	// atLeastOnce: the far end may see a record twice and dedups by
	// (node_id, offset), per docs/format/sinks.md; JetStream must not.
	atLeastOnce bool
}

// TestSyncSurvivesFaultsAndCrashes runs the real binary against each sink
// through toxiproxy: while HTTP load runs, the link gets latency, a bandwidth
// limit, connection resets, a timeout that swallows data and full outages, and
// the node is SIGKILLed during sync, 10 times. At the end the far end holds
// exactly the events the node stored — every acknowledged one among them —
// and the window results: once each for JetStream, once each after the
// documented (node_id, offset) dedup for the HTTP and MQTT sinks.
func TestSyncSurvivesFaultsAndCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test skipped in -short mode")
	}
	t.Parallel()
	t.Run("jetstream", func(t *testing.T) {
		srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
		require.NoError(t, err)
		defer srv.Close()
		runSyncFaults(t, faultTarget{
			config:   func(proxy string) string { return "cloud:\n  url: nats://" + proxy + "\n" },
			upstream: strings.TrimPrefix(srv.URL(), "nats://"),
			collect: func(t *testing.T) received {
				r := newReceived()
				cloudMessages(t, &r, srv.URL(), cloud.StreamEvents, "edge-7")
				cloudMessages(t, &r, srv.URL(), cloud.StreamResults, "edge-7")
				return r
			},
		})
	})
	t.Run("http", func(t *testing.T) {
		rec := newLineRecorder()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var body io.Reader = r.Body
			if r.Header.Get("Content-Encoding") == "zstd" {
				zr, err := zstd.NewReader(r.Body)
				if err != nil {
					w.WriteHeader(400)
					return
				}
				defer zr.Close()
				body = zr
			}
			b, err := io.ReadAll(body)
			if err != nil {
				w.WriteHeader(400)
				return
			}
			rec.add(b)
		}))
		defer srv.Close()
		runSyncFaults(t, faultTarget{
			config:      func(proxy string) string { return "cloud:\n  http:\n    url: http://" + proxy + "/ingest\n" },
			upstream:    strings.TrimPrefix(srv.URL, "http://"),
			collect:     func(*testing.T) received { return rec.received() },
			atLeastOnce: true,
		})
	})
	// The MQTT bridge: TestSyncMQTTBridgeSurvivesFaults (sync_mqtt_test.go).
}

// lineRecorder keeps the JSON lines a far end received.
type lineRecorder struct {
	mu sync.Mutex
	r  received
}

func newLineRecorder() *lineRecorder { return &lineRecorder{r: newReceived()} }

func (l *lineRecorder) add(body []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range bytes.Split(body, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec struct {
			Offset uint64 `json:"offset"`
			Type   string `json:"type"`
			Lane   string `json:"lane"`
			Record struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"record"`
		}
		if json.Unmarshal(line, &rec) != nil {
			continue
		}
		switch rec.Type {
		case "event":
			l.r.events[rec.Offset]++
			l.r.eventID[rec.Offset] = rec.Record.ID
		case "window":
			l.r.windows[rec.Record.ID]++
		case "alert":
			l.r.alerts[alertKey(rec.Record.ID, rec.Record.State == "firing")]++
		}
		l.r.arrivals = append(l.r.arrivals, arrival{rec.Offset, rec.Lane, "far end"})
	}
}

func (l *lineRecorder) received() received {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := newReceived()
	maps.Copy(r.events, l.r.events)
	maps.Copy(r.eventID, l.r.eventID)
	maps.Copy(r.windows, l.r.windows)
	maps.Copy(r.alerts, l.r.alerts)
	r.arrivals = slices.Clone(l.r.arrivals)
	return r
}

// syncLoad posts batches of 50 events until the node dies or stop is closed:
// normal "crash" events, low-priority "hvac" ones, and one critical "door"
// event per batch whose value flips every 10 batches, so that the door-open
// rule fires and resolves critical alerts throughout.
func syncLoad(p *proc, led *ledger, round, worker int, stop chan struct{}) {
	httpLoadWith(p, led, stop, func(n, i int) loadEvent {
		e := loadEvent{fmt.Sprintf("s-%d-%d-%d-%d", round, worker, n, i), fmt.Sprintf("http-%d", i%7), "crash", float64(n*100 + i)}
		switch {
		case i == 0:
			e.device, e.stream, e.value = fmt.Sprintf("door-%d", worker), "door", float64(n/10%2)
		case i%5 == 0:
			e.stream = "hvac"
		}
		return e
	})
}

// syncFaultConfig is the node config of the fault test, sink aside: 1 s
// windows, a critical and a low stream, and a critical alert rule.
const syncFaultConfig = `windows:
  sizes: [1s]
  allowed_lateness: 100ms
streams:
  door: {priority: critical}
  hvac: {priority: low}
alerts:
  rules:
    - name: door-open
      stream: door
      source: event
      op: ">"
      threshold: 0.5
      severity: critical
`

func runSyncFaults(t *testing.T, target faultTarget) {
	const rounds = 10
	dir := t.TempDir()
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	// The proxy is stopped and started again on its address ("down"): the
	// address is from below the ephemeral range, which the connections of
	// the tests running beside this one could take meanwhile.
	proxy := toxiproxy.NewProxy(api, "sink", testutil.FreeAddr(t), target.upstream)
	require.NoError(t, proxy.Start())
	defer proxy.Stop()

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
	writeFile(t, cfg, syncFaultConfig+target.config(proxy.Listen)+"  max_delay: 20ms\n  batch_records: 200\n")
	led := &ledger{sent: map[string]sentEvent{}, acked: map[string]bool{}}
	for round := range rounds {
		p := start(t, data, "--config", cfg, "--node-id", "edge-7")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); syncLoad(p, led, round, w, stop) }()
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
	p := start(t, data, "--config", cfg, "--node-id", "edge-7")
	drainStart := time.Now()
	defer func() { t.Logf("drain took %v", time.Since(drainStart)) }()
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
	var nodeAlerts struct {
		Alerts []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"alerts"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/alerts")), &nodeAlerts))
	p.stop(t)
	time.Sleep(200 * time.Millisecond) // the MQTT far end's last deliveries

	got := target.collect(t)
	dups := 0
	for off, n := range got.events {
		if !target.atLeastOnce {
			require.Equal(t, 1, n, "event record %d stored %d times", off, n)
		}
		dups += n - 1
	}
	require.Len(t, got.events, len(stored), "the far end holds exactly the events the node stored")
	farIDs := map[string]bool{}
	for _, e := range stored {
		id, ok := got.eventID[e.Offset]
		require.True(t, ok, "event at offset %d never arrived", e.Offset)
		require.Equal(t, e.ID, id, "offset %d", e.Offset)
		farIDs[id] = true
	}
	for id := range led.acked {
		require.True(t, farIDs[id], "acknowledged event %s never arrived", id)
	}
	for _, w := range windows {
		require.GreaterOrEqual(t, got.windows[w.ID], 1, "window %s never arrived", w.ID)
		if !target.atLeastOnce {
			require.Equal(t, 1, got.windows[w.ID], "window %s", w.ID)
		}
	}
	require.Len(t, got.windows, len(windows))
	wantAlerts := 0
	for _, a := range nodeAlerts.Alerts {
		for _, firing := range []bool{true, false} {
			if !firing && a.State != "resolved" {
				continue
			}
			wantAlerts++
			k := alertKey(a.ID, firing)
			require.GreaterOrEqual(t, got.alerts[k], 1, "alert %s never arrived", k)
			if !target.atLeastOnce {
				require.Equal(t, 1, got.alerts[k], "alert %s", k)
			}
		}
	}
	require.Len(t, got.alerts, wantAlerts, "the far end holds exactly the node's alert records")
	checkLaneOrder(t, got.arrivals)
	t.Logf("%d crashes under faults: %d events acknowledged, %d stored, all arrived (%d repeats to dedup); %d windows; %d alert records",
		rounds, len(led.acked), len(stored), dups, len(windows), wantAlerts)
	require.Greater(t, len(led.acked), 500)
	require.Greater(t, wantAlerts, 4, "the door-open rule fired and resolved")
}

// checkLaneOrder checks that each lane's records first arrived in ascending
// offset order within each group (repeats of an at-least-once sink aside):
// per subject for JetStream, which batches per subject (docs/format/cloud.md),
// across the whole far end for the HTTP sink. And that every lane the config
// makes possible carried records.
func checkLaneOrder(t *testing.T, arrivals []arrival) {
	t.Helper()
	type key struct{ group, lane string }
	last := map[key]uint64{}
	seen := map[key]map[uint64]bool{}
	lanes := map[string]int{}
	for _, a := range arrivals {
		k := key{a.group, a.lane}
		if seen[k] == nil {
			seen[k] = map[uint64]bool{}
		}
		if seen[k][a.offset] {
			continue
		}
		seen[k][a.offset] = true
		lanes[a.lane]++
		if prev, ok := last[k]; ok {
			require.Greater(t, a.offset, prev, "lane %s in %s: offset %d arrived after %d", a.lane, a.group, a.offset, prev)
		}
		last[k] = a.offset
	}
	for _, l := range []string{"critical", "normal", "low"} {
		require.Positive(t, lanes[l], "no record arrived in lane %s", l)
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
}
