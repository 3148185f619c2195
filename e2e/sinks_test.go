package e2e

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// sinkLine is one JSON line of docs/format/sinks.md, with where it arrived.
type sinkLine struct {
	NodeID string         `json:"node_id"`
	Offset uint64         `json:"offset"`
	Type   string         `json:"type"`
	Stream string         `json:"stream"`
	Lane   string         `json:"lane"`
	Record map[string]any `json:"record"`
	topic  string         // MQTT bridge only
}

// sinkReceiver keeps the lines a far end received.
type sinkReceiver struct {
	mu    sync.Mutex
	lines []sinkLine
	bad   []string // what could not be decoded, or broke the wire contract
}

func (r *sinkReceiver) add(payload []byte, topic string) {
	var l sinkLine
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := dec.Decode(&l); err != nil {
		r.bad = append(r.bad, fmt.Sprintf("%q: %v", payload, err))
		return
	}
	l.topic = topic
	r.lines = append(r.lines, l)
}

func (r *sinkReceiver) complain(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bad = append(r.bad, fmt.Sprintf(format, args...))
}

// byType returns the lines of the given type, once per (node_id, offset) as
// docs/format/sinks.md tells receivers to dedup, in offset order.
func (r *sinkReceiver) byType(typ string) []sinkLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var out []sinkLine
	for _, l := range r.lines {
		k := fmt.Sprint(l.NodeID, "/", l.Offset)
		if l.Type != typ || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b sinkLine) int { return cmp.Compare(a.Offset, b.Offset) })
	return out
}

var idempotencyKeyRE = regexp.MustCompile(`^edge-sinks:(\d+)-(\d+)$`)

// TestSinksDeliverRecords runs the binary with the HTTP sink, pointed at a
// real HTTP server, and the MQTT bridge sink, pointed at a real Mosquitto
// with a paho subscriber. Three events fire and resolve a critical alert;
// both far ends decode exactly those events and both alert records, with
// the wire format of docs/format/sinks.md: NDJSON in one zstd frame with its
// headers over HTTP, one QoS 1 message per record on
// holdfast/<node>/<kind>/<stream> over MQTT.
func TestSinksDeliverRecords(t *testing.T) {
	broker := testutil.StartMosquitto(t)

	var httpRecv sinkReceiver
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/ingest" || r.Header.Get("Content-Type") != "application/x-ndjson" ||
			r.Header.Get("Content-Encoding") != "zstd" || r.Header.Get("Authorization") != "Bearer s3cret" ||
			!idempotencyKeyRE.MatchString(r.Header.Get("Idempotency-Key")) {
			httpRecv.complain("request %s %s with headers %v", r.Method, r.URL.Path, r.Header)
		}
		zr, err := zstd.NewReader(r.Body)
		if err != nil {
			httpRecv.complain("zstd: %v", err)
			w.WriteHeader(400)
			return
		}
		defer zr.Close()
		body, err := io.ReadAll(zr)
		if err != nil || !bytes.HasSuffix(body, []byte("\n")) {
			httpRecv.complain("body %q: %v", body, err)
			w.WriteHeader(400)
			return
		}
		for line := range bytes.SplitSeq(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
			httpRecv.add(line, "")
		}
	}))
	defer srv.Close()

	var mqttRecv sinkReceiver
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("far-end").
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			if m.Qos() != 1 || m.Retained() {
				mqttRecv.complain("%s: qos %d, retained %v", m.Topic(), m.Qos(), m.Retained())
			}
			mqttRecv.add(m.Payload(), m.Topic())
		}))
	tok := sub.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	defer sub.Disconnect(100)
	tok = sub.Subscribe("holdfast/#", 1, nil)
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())

	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
windows: {sizes: [1h]}
alerts:
  rules:
    - {name: freezer-warm, stream: temp, op: ">", threshold: -10, severity: critical}
cloud:
  max_delay: 10ms
  http:
    url: %s/ingest
    headers: {Authorization: "Bearer s3cret"}
  mqtt:
    broker: tcp://%s
`, srv.URL, broker))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "edge-sinks")

	// Within one hour window that stays open: the far ends get events and alerts only.
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Hour).Add(10 * time.Minute)
	var lines []string
	for i, v := range []float64{-18, -5, -20} {
		lines = append(lines, fmt.Sprintf(`{"device_id":"freezer-1","stream":"temp","ts":%d,"value":%v,"id":"e%d","tags":{"room":"b2"}}`,
			t0.Add(time.Duration(i)*time.Second).UnixMilli(), v, i))
	}
	code, r := post(t, p, "application/x-ndjson", "", []byte(strings.Join(lines, "\n")))
	require.Equal(t, 200, code, "%+v", r)
	stored := allEvents(t, p, "")
	require.Len(t, stored, 3)
	slices.SortFunc(stored, func(a, b storedEvent) int { return cmp.Compare(a.Offset, b.Offset) }) // newest first

	ms := func(d time.Duration) string { return t0.Add(d).UTC().Format("2006-01-02T15:04:05.000Z07:00") }
	alertID := fmt.Sprintf("freezer-warm/freezer-1/%d", t0.Add(time.Second).UnixMilli())
	for name, recv := range map[string]*sinkReceiver{"HTTP": &httpRecv, "MQTT": &mqttRecv} {
		waitFor(t, name+" sink to deliver 3 events and 2 alerts", 20*time.Second, func() bool {
			return len(recv.byType("event")) >= 3 && len(recv.byType("alert")) >= 2
		})
		recv.mu.Lock()
		require.Empty(t, recv.bad, "%s far end", name)
		recv.mu.Unlock()

		events := recv.byType("event")
		require.Len(t, events, 3, "%s events", name)
		for i, l := range events {
			require.Equal(t, stored[i].Offset, l.Offset, "%s event %d", name, i)
			require.Equal(t, "edge-sinks", l.NodeID)
			require.Equal(t, "temp", l.Stream)
			require.Equal(t, "normal", l.Lane)
			require.NotEmpty(t, l.Record["received_at"])
			delete(l.Record, "received_at")
			require.Equal(t, map[string]any{
				"device_id": "freezer-1", "stream": "temp", "ts": ms(time.Duration(i) * time.Second),
				"value": json.Number([]string{"-18", "-5", "-20"}[i]), "id": fmt.Sprintf("e%d", i),
				"tags": map[string]any{"room": "b2"},
			}, l.Record, "%s event %d", name, i)
			if name == "MQTT" {
				require.Equal(t, "holdfast/edge-sinks/events/temp", l.topic)
			}
		}

		alerts := recv.byType("alert")
		require.Len(t, alerts, 2, "%s alerts", name)
		for i, l := range alerts {
			require.Greater(t, l.Offset, stored[0].Offset)
			require.Equal(t, "edge-sinks", l.NodeID)
			require.Equal(t, "critical", l.Lane, "critical alerts take the critical lane")
			want := map[string]any{
				"id": alertID, "rule": "freezer-warm", "severity": "critical", "state": "firing", "stream": "temp",
				"device_id": "freezer-1", "value": json.Number("-5"), "threshold": json.Number("-10"), "fired_at": ms(time.Second),
			}
			if i == 1 {
				want["state"], want["value"], want["resolved_at"] = "resolved", json.Number("-20"), ms(2*time.Second)
			}
			require.Equal(t, want, l.Record, "%s alert %d", name, i)
			if name == "MQTT" {
				require.Equal(t, "holdfast/edge-sinks/alerts/temp", l.topic)
			}
		}
	}
}
