package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// TestDataDirIsExclusive: a second node on the same data directory refuses to
// start instead of sharing the log.
func TestDataDirIsExclusive(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	out, err := exec.Command(binary, "run", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "is in use by another holdfast process")
	resp, err := http.Get(p.url("/healthz"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, "the first node is unaffected")
}

// TestCleanShutdownKeepsEverything: SIGTERM under no load exits 0, and a
// restart serves the same events and status.
func TestCleanShutdownKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir)
	status, r := post(t, p, "application/json", "", []byte(`[{"device_id":"a","stream":"s","value":1},{"device_id":"b","stream":"s","value":2}]`))
	require.Equal(t, 200, status)
	require.Equal(t, 2, r.Accepted)
	p.stop(t)
	require.Contains(t, p.logs(), "stopped cleanly")

	p = start(t, dir)
	out, err := exec.Command(binary, "status", "--addr", p.httpAddr).CombinedOutput()
	require.NoError(t, err, string(out))
	for _, want := range []string{"  OK\n", "offsets 0–2", "pressure normal", "Processing  live", "Sync: off"} {
		require.Contains(t, string(out), want)
	}
	require.Len(t, allEvents(t, p, ""), 2)
	require.Len(t, allEvents(t, p, "&device_id=b"), 1)
	require.True(t, strings.Contains(get(t, p, "/v1/status"), `"next_offset":2`))
}

// TestStopRightAfterManyDevicesLeave: SIGTERM just after 1 000 idle MQTT
// 3.1.1 devices have connected and gone, while the broker may still be
// cleaning up after them, stops the node cleanly (stop fails after 30 s,
// with the node's goroutines in its log). A stop once hung this way on a
// loaded machine and was not reproduced; this keeps trying it in CI.
func TestStopRightAfterManyDevicesLeave(t *testing.T) {
	t.Parallel()
	p := start(t, t.TempDir())
	const devices = 1000
	conns := make([]net.Conn, 0, devices)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range devices {
		c, err := net.DialTimeout("tcp", p.mqttAddr, 10*time.Second)
		require.NoError(t, err)
		conns = append(conns, c)
		id := fmt.Sprintf("idle-%d", i)
		// CONNECT: MQTT 3.1.1, clean session, keepalive 60 s.
		rem := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(id))}, id...)
		_, err = c.Write(append([]byte{0x10, byte(len(rem))}, rem...))
		require.NoError(t, err)
		ack := make([]byte, 4)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
		_, err = io.ReadFull(c, ack)
		require.NoError(t, err)
		require.Equal(t, []byte{0x20, 2, 0, 0}, ack, "CONNACK accepted for %s", id)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	p.stop(t)
}

func TestConfigCheck(t *testing.T) {
	out, err := exec.Command(binary, "config", "check", "testdata/bad.yaml").CombinedOutput()
	require.Error(t, err)
	for _, want := range []string{`mqtt.mode: "bridge" must be embedded, external or off`, "buffer.max_bytes"} {
		require.Contains(t, string(out), want)
	}
	out, err = exec.Command(binary, "config", "check", "testdata/good.yaml").CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "testdata/good.yaml: ok")
}

// TestConfigInitPrintVersion runs the config and version commands of the
// real binary: the example `config init` writes passes `config check` and
// is not overwritten, `config print` shows the effective config with its
// secrets redacted, `version` names the version.
func TestConfigInitPrintVersion(t *testing.T) {
	dir := t.TempDir()
	holdfastIn(t, dir, "config", "init", "example.yaml")
	out, _ := holdfastIn(t, dir, "config", "check", "example.yaml")
	require.Contains(t, out, "example.yaml: ok")
	again, err := exec.Command(binary, "config", "init", filepath.Join(dir, "example.yaml")).CombinedOutput()
	require.Error(t, err, "config init overwrote a file:\n%s", again)

	writeFile(t, filepath.Join(dir, "secret.yaml"), "node_id: edge-5\ncloud:\n  url: nats://user:hunter2@cloud.example:4222\n")
	out, _ = holdfastIn(t, dir, "config", "print", "--config", "secret.yaml")
	require.Contains(t, out, "node_id: edge-5")
	require.Contains(t, out, "segment_bytes:", "defaults shown")
	require.NotContains(t, out, "hunter2")
	require.Contains(t, out, "redacted", "the password's place is marked")

	out, _ = holdfastIn(t, dir, "version")
	require.Regexp(t, `^holdfast \S+`, out)
}

// TestREADMEConfigIsValid keeps the configuration reference in README.md true:
// its YAML example must pass `holdfast config check`.
func TestREADMEConfigIsValid(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(readme), "```yaml\n")
	require.True(t, ok, "README has a yaml block")
	example, _, ok := strings.Cut(rest, "```")
	require.True(t, ok)
	path := filepath.Join(t.TempDir(), "readme.yaml")
	require.NoError(t, os.WriteFile(path, []byte(example), 0o600))
	out, err := exec.Command(binary, "config", "check", path).CombinedOutput()
	require.NoError(t, err, string(out))
}

// TestBufferPressureLevels fills a small buffer while the uplink is down: its
// pressure level rises through the thresholds as pending records fill it,
// shows in status and metrics, and reaches the notifiers as a critical alert.
func TestBufferPressureLevels(t *testing.T) {
	dir := t.TempDir()
	var alerts []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		alerts = append(alerts, string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	cloudAddr := testutil.FreeAddr(t) // nothing listens there: the uplink is down
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, "buffer:\n  segment_bytes: 64KiB\n  max_bytes: 1MiB\nstreams:\n  door: {priority: critical}\n  hvac: {priority: low}\n"+
		"cloud:\n  url: nats://"+cloudAddr+"\n"+
		"alerts:\n  notify:\n    webhooks:\n      - url: "+srv.URL+"\n")
	p := start(t, filepath.Join(dir, "data"), "--config", cfg)
	defer p.stop(t)
	levels := map[string]bool{}
	var body bytes.Buffer
	status := func() (level string, util float64) {
		var s struct {
			Buffer struct {
				Level       string  `json:"level"`
				Utilisation float64 `json:"utilisation"`
			} `json:"buffer"`
		}
		require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &s))
		return s.Buffer.Level, s.Buffer.Utilisation
	}
	for _, want := range []struct {
		level string
		at    float64
	}{{"warning", 0.72}, {"critical", 0.87}, {"emergency", 0.96}} {
		for i := 0; ; i++ {
			require.Less(t, i, 1000, "the buffer never reached %v", want.at)
			if _, u := status(); u >= want.at {
				break
			}
			body.Reset()
			for j := range 100 {
				fmt.Fprintf(&body, `{"device_id":"d%d","stream":"s","value":%d}`+"\n", j, i)
			}
			code, r := post(t, p, "application/x-ndjson", "", body.Bytes())
			require.Equal(t, 200, code, "%+v", r) // sampled from critical on, never all
		}
		// Looked at every second; retention may take the buffer back below
		// the threshold meanwhile, so a higher level counts too.
		waitFor(t, "level "+want.level, 5*time.Second, func() bool {
			l, _ := status()
			levels[l] = true
			return levels[want.level] || (want.level != "emergency" && levels["emergency"])
		})
	}
	metrics := get(t, p, "/metrics")
	require.True(t, strings.Contains(metrics, `holdfast_buffer_pressure_level{level="emergency"} 1`) ||
		strings.Contains(metrics, `holdfast_buffer_pressure_level{level="full"} 1`), "level gauge")
	waitFor(t, "the pressure alert at the webhook", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range alerts {
			if strings.Contains(a, `"rule":"buffer-pressure"`) && strings.Contains(a, `"severity":"critical"`) {
				return true
			}
		}
		return false
	})
	t.Logf("levels seen while filling: %v", levels)

	// At emergency: critical streams all in, low-priority ones refused, the
	// others sampled at 50 %; each accounted for in the ledger.
	if l, _ := status(); l != "emergency" && l != "full" {
		t.Fatalf("level %s after filling", l)
	}
	post1 := func(stream string, n int) (code int, accepted int, rejected []string) {
		body.Reset()
		for j := range n {
			fmt.Fprintf(&body, `{"device_id":"x%d","stream":"%s","value":1}`+"\n", j, stream)
		}
		req, err := http.NewRequest("POST", p.url("/v1/events"), bytes.NewReader(body.Bytes()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-ndjson")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var r struct {
			Accepted int `json:"accepted"`
			Rejected []struct {
				Error string `json:"error"`
			} `json:"rejected"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
		for _, rj := range r.Rejected {
			rejected = append(rejected, rj.Error)
		}
		return resp.StatusCode, r.Accepted, rejected
	}
	code, acc, rej := post1("door", 20)
	require.Equal(t, 200, code)
	require.Equal(t, 20, acc, "critical events all stored: %v", rej)
	code, acc, rej = post1("hvac", 20)
	require.Equal(t, http.StatusInsufficientStorage, code, "low-priority events refused")
	require.Zero(t, acc)
	require.Len(t, rej, 20)
	require.Contains(t, rej[0], `stream "hvac": not stored, the buffer is under pressure (refused)`)
	code, acc, rej = post1("s", 20)
	require.Equal(t, 200, code)
	require.Equal(t, 10, acc, "normal events sampled at 50 %%: %v", rej)
	require.Contains(t, rej[0], "(sampled)")
	var st struct {
		Losses map[string]map[string]uint64 `json:"losses"`
	}
	require.NoError(t, json.Unmarshal([]byte(get(t, p, "/v1/status")), &st))
	require.Equal(t, uint64(20), st.Losses["refused"]["hvac"])
	require.GreaterOrEqual(t, st.Losses["sampled"]["s"], uint64(10))
}
