package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/node"
)

// helperEnv makes the test binary act as `holdfast run`, so that the bench can
// start it as its node without building the real binary.
const helperEnv = "HOLDFAST_BENCH_TEST_NODE"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperNode(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// helperNode is a minimal `holdfast run`: the flags the bench passes, the real
// node with its --config, its "node ready" log line on stderr, and a clean stop on SIGTERM.
func helperNode(args []string) int {
	cfg := config.Default()
	if len(args) == 0 || args[0] != "run" {
		fmt.Fprintln(os.Stderr, "helper node: want run, got", args)
		return 2
	}
	for i := 1; i+1 < len(args); i += 2 {
		if args[i] == "--config" {
			var err error
			if cfg, err = config.Load(args[i+1]); err != nil {
				fmt.Fprintln(os.Stderr, "helper node:", err)
				return 2
			}
		}
	}
	for i := 1; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--data-dir":
			cfg.DataDir = args[i+1]
		case "--http-addr":
			cfg.HTTP.Addr = args[i+1]
		case "--mqtt-addr":
			cfg.MQTT.Addr = args[i+1]
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	n, err := node.Start(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper node:", err)
		return 1
	}
	<-ctx.Done()
	if err := n.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "helper node:", err)
		return 1
	}
	return 0
}

func newTestNode(t *testing.T) *node.Node {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.Addr = "127.0.0.1:0"
	n, err := node.Start(cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	return n
}

// point is an event as far as this test compares them.
type point struct {
	ts    int64
	value float64
}

func sortPoints(ps []point) {
	slices.SortFunc(ps, func(a, b point) int {
		if a.ts != b.ts {
			return int(a.ts - b.ts)
		}
		switch {
		case a.value < b.value:
			return -1
		case a.value > b.value:
			return 1
		}
		return 0
	})
}

// recorder collects the acknowledged events of one device.
type recorder struct {
	device string
	mu     sync.Mutex
	points []point
}

func (r *recorder) onAck(deviceID string, ts int64, value float64) {
	if deviceID != r.device {
		return
	}
	r.mu.Lock()
	r.points = append(r.points, point{ts, value})
	r.mu.Unlock()
}

// storedPoints returns what the node has stored for device.
func storedPoints(t *testing.T, httpAddr, device string) []point {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(
		"http://" + httpAddr + "/v1/events?limit=10000&device_id=" + device)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var page struct {
		Events []struct {
			DeviceID string  `json:"device_id"`
			Stream   string  `json:"stream"`
			TS       string  `json:"ts"`
			Value    float64 `json:"value"`
		} `json:"events"`
		Next string `json:"next"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
	require.Empty(t, page.Next, "more than one page")
	var ps []point
	for _, e := range page.Events {
		require.Equal(t, device, e.DeviceID)
		require.Equal(t, benchStream, e.Stream)
		ts, err := time.Parse(time.RFC3339Nano, e.TS)
		require.NoError(t, err)
		ps = append(ps, point{ts.UnixMilli(), e.Value})
	}
	return ps
}

func checkLatency(t *testing.T, l Latency) {
	t.Helper()
	assert.Positive(t, l.Samples)
	assert.LessOrEqual(t, l.P50, l.P95)
	assert.LessOrEqual(t, l.P95, l.P99)
	assert.LessOrEqual(t, l.P99, l.Max)
	assert.Positive(t, l.Max)
}

func TestHTTPIngestCount(t *testing.T) {
	n := newTestNode(t)
	rec := &recorder{device: "dev-000003"}
	rep, err := Run(t.Context(), Options{
		Target: n.HTTPAddr(), Devices: 20, Count: 2000, Batch: 70, Connections: 4,
		onAck: rec.onAck,
	})
	require.NoError(t, err)

	assert.Equal(t, int64(2000), rep.Sent)
	assert.Equal(t, int64(2000), rep.Acked)
	assert.Zero(t, rep.ErrorCount(), "errors: %v %v", rep.Errors, rep.ErrorExamples)
	assert.Equal(t, int64(2000), rep.NodeAccepted)
	assert.Equal(t, "batch", rep.Latency.Per)
	assert.Equal(t, "send_time", rep.Latency.From)
	assert.Equal(t, uint64(29), rep.Latency.Samples) // ⌈2000/70⌉ requests
	checkLatency(t, rep.Latency)
	assert.Positive(t, rep.RSS.IdleBytes)
	assert.GreaterOrEqual(t, rep.RSS.PeakBytes, rep.RSS.FinalBytes)
	var perSecond int64
	for _, v := range rep.PerSecond {
		perSecond += v
	}
	assert.Equal(t, int64(2000), perSecond)

	// Workers claim batches as they go, so dev-000003's share varies; what it
	// sent and was acked for must be exactly what is stored.
	require.NotEmpty(t, rec.points)
	stored := storedPoints(t, n.HTTPAddr(), "dev-000003")
	sortPoints(rec.points)
	sortPoints(stored)
	assert.Equal(t, rec.points, stored)
}

func TestMQTTIngestCount(t *testing.T) {
	for _, inflight := range []int{1, 4} {
		t.Run(fmt.Sprintf("inflight=%d", inflight), func(t *testing.T) {
			n := newTestNode(t)
			rec := &recorder{device: "dev-000003"}
			rep, err := Run(t.Context(), Options{
				Transport: TransportMQTT, Target: n.MQTTAddr(), HTTPTarget: n.HTTPAddr(),
				Devices: 10, Count: 2000, Inflight: inflight, onAck: rec.onAck,
			})
			require.NoError(t, err)

			assert.Equal(t, int64(2000), rep.Sent)
			assert.Equal(t, int64(2000), rep.Acked)
			assert.Zero(t, rep.ErrorCount(), "errors: %v %v", rep.Errors, rep.ErrorExamples)
			assert.Equal(t, int64(2000), rep.NodeAccepted)
			assert.Equal(t, "message", rep.Latency.Per)
			assert.Equal(t, uint64(2000), rep.Latency.Samples)
			assert.Equal(t, 10, rep.Connections)
			checkLatency(t, rep.Latency)

			// Devices claim events as they go, so dev-000003's share varies;
			// what it sent and was acked for must be exactly what is stored.
			require.NotEmpty(t, rec.points)
			stored := storedPoints(t, n.HTTPAddr(), "dev-000003")
			sortPoints(rec.points)
			sortPoints(stored)
			assert.Equal(t, rec.points, stored)
		})
	}
}

func TestRateRespectsCount(t *testing.T) {
	n := newTestNode(t)
	for _, o := range []Options{
		{Target: n.HTTPAddr(), Devices: 7, Batch: 20, Connections: 3},
		{Transport: TransportMQTT, Target: n.MQTTAddr(), HTTPTarget: n.HTTPAddr(), Devices: 5},
	} {
		t.Run(o.Transport, func(t *testing.T) {
			o.Rate, o.Count, o.Duration = 2000, 301, time.Minute
			rep, err := Run(t.Context(), o)
			require.NoError(t, err)
			assert.Equal(t, int64(301), rep.Sent)
			assert.Equal(t, int64(301), rep.Acked)
			assert.Zero(t, rep.ErrorCount(), "errors: %v %v", rep.Errors, rep.ErrorExamples)
			assert.Equal(t, "intended_send_time", rep.Latency.From)
			checkLatency(t, rep.Latency)
			assert.LessOrEqual(t, rep.Latency.SendLagP99, rep.Latency.SendLagMax)
		})
	}
}

func TestDurationBoundsRun(t *testing.T) {
	n := newTestNode(t)
	rep, err := Run(t.Context(), Options{Target: n.HTTPAddr(), Devices: 3, Rate: 100, Batch: 10, Duration: 950 * time.Millisecond})
	require.NoError(t, err)
	// At 100 events/s in batches of 10, batches are due every 100 ms: at most
	// nine are due within 950 ms.
	assert.Positive(t, rep.Acked)
	assert.LessOrEqual(t, rep.Acked, int64(90))
	assert.Zero(t, rep.Acked%10)
	assert.Equal(t, rep.Sent, rep.Acked)
	assert.Zero(t, rep.ErrorCount())
}

func TestHTTPErrorsAreCounted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/events":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"accepted":0,"rejected":[],"error":"events not stored: storage unavailable"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	rep, err := Run(t.Context(), Options{Target: strings.TrimPrefix(srv.URL, "http://"), Devices: 4, Batch: 10, Count: 100})
	require.NoError(t, err)
	assert.Equal(t, int64(0), rep.Acked)
	assert.Equal(t, map[string]int64{"http_503": 100}, rep.Errors)
	assert.Contains(t, rep.ErrorExamples["http_503"], "storage unavailable")
	assert.NotEmpty(t, rep.RSS.Error, "no /metrics to read")
	assert.Equal(t, int64(-1), rep.NodeAccepted)
	srv.CloseClientConnections()
}

func TestRejectedEventsAreCounted(t *testing.T) {
	// A node that stores nothing and refuses every other event.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		lines := bytes.Count(body, []byte("\n"))
		var rej []string
		for i := 0; i < lines; i += 2 {
			rej = append(rej, fmt.Sprintf(`{"index":%d,"error":"value: not a number"}`, i))
		}
		fmt.Fprintf(w, `{"accepted":%d,"rejected":[%s]}`, lines-len(rej), strings.Join(rej, ","))
	}))
	defer srv.Close()
	rep, err := Run(t.Context(), Options{Target: strings.TrimPrefix(srv.URL, "http://"), Devices: 2, Batch: 10, Count: 100, Connections: 1})
	require.NoError(t, err)
	assert.Equal(t, int64(50), rep.Acked)
	assert.Equal(t, map[string]int64{"rejected": 50}, rep.Errors)
	srv.CloseClientConnections()
}

func TestStartsAndStopsItsNode(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv(helperEnv, "1")
	exe, err := os.Executable()
	require.NoError(t, err)

	for _, transport := range []string{TransportHTTP, TransportMQTT} {
		t.Run(transport, func(t *testing.T) {
			rep, err := Run(t.Context(), Options{Transport: transport, NodeBinary: exe, Devices: 5, Count: 500, Batch: 50})
			require.NoError(t, err)
			assert.True(t, rep.NodeStarted)
			assert.Equal(t, int64(500), rep.Acked)
			assert.Equal(t, int64(500), rep.NodeAccepted)
			assert.Zero(t, rep.ErrorCount(), "errors: %v %v", rep.Errors, rep.ErrorExamples)
			assert.Positive(t, rep.RSS.HWMBytes)
			assert.Empty(t, rep.DataDir)
			left, err := os.ReadDir(tmp)
			require.NoError(t, err)
			assert.Empty(t, left, "the node's data dir is removed")
		})
	}

	t.Run("keep-data", func(t *testing.T) {
		rep, err := Run(t.Context(), Options{NodeBinary: exe, Devices: 5, Count: 50, KeepData: true})
		require.NoError(t, err)
		require.NotEmpty(t, rep.DataDir)
		assert.FileExists(t, filepath.Join(rep.DataDir, "LOCK"))
		require.NoError(t, os.RemoveAll(rep.DataDir))
	})

	t.Run("node fails to start", func(t *testing.T) {
		_, err := Run(t.Context(), Options{NodeBinary: exe, NodeArgs: []string{"--http-addr", "not-an-address"}, Count: 10})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "exited before it was ready")
	})
}

func TestValidate(t *testing.T) {
	ok := Options{Target: "127.0.0.1:1", Duration: time.Second}.withDefaults()
	require.NoError(t, ok.Validate())
	for name, mutate := range map[string]func(*Options){
		"transport":  func(o *Options) { o.Transport = "coap" },
		"devices":    func(o *Options) { o.Devices = -1 },
		"rate":       func(o *Options) { o.Rate = -5 },
		"unbounded":  func(o *Options) { o.Duration, o.Count = 0, 0 },
		"batch":      func(o *Options) { o.Batch = -1 },
		"inflight":   func(o *Options) { o.Inflight = 0 },
		"target":     func(o *Options) { o.Target = "localhost" },
		"no binary":  func(o *Options) { o.Target = "" },
		"conns zero": func(o *Options) { o.Connections = 0 },
	} {
		o := ok
		mutate(&o)
		assert.Error(t, o.Validate(), name)
	}
	d := Options{Transport: TransportMQTT, Target: "127.0.0.1:1883", Devices: 3}.withDefaults()
	assert.Equal(t, "127.0.0.1:8080", d.HTTPTarget)
	assert.Equal(t, 3, d.Connections, "connections are capped at devices")
}

func TestInterruptStopsSendingAndDrains(t *testing.T) {
	n := newTestNode(t)
	ctx, cancel := context.WithCancel(t.Context())
	var progressOut bytes.Buffer
	go func() {
		time.Sleep(700 * time.Millisecond)
		cancel()
	}()
	rep, err := Run(ctx, Options{Target: n.HTTPAddr(), Devices: 10, Batch: 100, Duration: time.Minute, Progress: &progressOut})
	require.ErrorContains(t, err, "interrupted")
	require.NotNil(t, rep)
	// What was sent before the interrupt was still acknowledged.
	assert.Positive(t, rep.Acked)
	assert.Equal(t, rep.Sent, rep.Acked)
	assert.Zero(t, rep.ErrorCount(), "errors: %v %v", rep.Errors, rep.ErrorExamples)
	assert.Contains(t, progressOut.String(), "acked")
}
