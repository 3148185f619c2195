package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

type ingestResponse struct {
	Accepted int `json:"accepted"`
	Rejected []struct {
		Index int    `json:"index"`
		Error string `json:"error"`
	} `json:"rejected"`
	Error string `json:"error"`
}

func post(t *testing.T, p *proc, contentType, encoding string, body []byte) (int, ingestResponse) {
	t.Helper()
	req, err := http.NewRequest("POST", p.url("/v1/events"), bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var r ingestResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return resp.StatusCode, r
}

// TestBadInputIsRejectedPrecisely sends every kind of bad input over HTTP and
// MQTT to the real binary and checks the error names what is wrong, that valid
// events beside bad ones are stored, and that the node keeps serving.
func TestBadInputIsRejectedPrecisely(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "holdfast.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte("http:\n  max_body_bytes: 64KiB\n"), 0o600))
	p := start(t, filepath.Join(dir, "data"), "--config", cfgPath)
	future := time.Now().Add(24 * time.Hour).UnixMilli()

	for _, c := range []struct {
		name, contentType, body string
		status, accepted        int
		errs                    map[int]string // rejected index → error substring
		whole                   string         // whole-request error substring
	}{
		{name: "bad JSON", contentType: "application/json", body: `{"device_id": "a", "value": }`,
			status: 400, whole: "malformed JSON at byte"},
		{name: "truncated array", contentType: "application/json", body: `[{"device_id":"a","stream":"s","value":1},`,
			status: 400, whole: "malformed JSON"},
		{name: "mixed NDJSON", contentType: "application/x-ndjson", status: 200, accepted: 2, body: strings.Join([]string{
			`{"device_id":"good-1","stream":"s","value":1}`,
			`{"stream":"s","value":2}`,
			`{"device_id":"bad","stream":"s","value":"hot"}`,
			`not json at all`,
			`{"device_id":"bad","stream":"s","value":3,"ts":` + fmt.Sprint(future) + `}`,
			`{"device_id":"bad","stream":"s","value":3,"ts":1700000000}`,
			`{"device_id":"bad/x","stream":"s","value":3}`,
			`{"device_id":"good-2","stream":"s","value":4,"tags":{"site":"a"}}`,
		}, "\n"), errs: map[int]string{
			1: `field "device_id": required`,
			2: `field "value": must be a number, got string`,
			3: "malformed JSON",
			4: "in the future",
			5: "milliseconds",
			6: `field "device_id"`,
		}},
		{name: "array with wrong types", contentType: "application/json", status: 400,
			body: `[{"device_id":1,"stream":"s","value":1},{"device_id":"x","stream":"s","value":1,"tags":{"k":5}}]`,
			errs: map[int]string{0: `field "device_id": must be a string`, 1: `field "tags.k"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, r := post(t, p, c.contentType, "", []byte(c.body))
			require.Equal(t, c.status, status, "%+v", r)
			require.Equal(t, c.accepted, r.Accepted)
			require.Contains(t, r.Error, c.whole)
			require.Len(t, r.Rejected, len(c.errs), "%+v", r.Rejected)
			for _, rj := range r.Rejected {
				require.Contains(t, rj.Error, c.errs[rj.Index], "index %d", rj.Index)
			}
		})
	}

	t.Run("oversized body", func(t *testing.T) {
		big := bytes.Repeat([]byte(`{"device_id":"big","stream":"s","value":1}`+"\n"), 2000)
		status, r := post(t, p, "application/x-ndjson", "", big)
		require.Equal(t, 413, status)
		require.Contains(t, r.Error, "exceeds the limit of 65536 bytes")
	})
	t.Run("gzip bomb", func(t *testing.T) {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(bytes.Repeat([]byte(" "), 10<<20))
		zw.Close()
		status, r := post(t, p, "application/json", "gzip", b.Bytes())
		require.Equal(t, 413, status)
		require.Contains(t, r.Error, "exceeds the limit")
	})
	t.Run("unknown encoding", func(t *testing.T) {
		status, r := post(t, p, "application/json", "br", []byte("x"))
		require.Equal(t, 415, status)
		require.Contains(t, r.Error, `Content-Encoding "br" not supported`)
	})
	t.Run("gzip and zstd bodies", func(t *testing.T) {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		io.WriteString(zw, `{"device_id":"good-3","stream":"s","value":5}`)
		zw.Close()
		status, r := post(t, p, "application/json", "gzip", gz.Bytes())
		require.Equal(t, 200, status, "%+v", r)
		require.Equal(t, 1, r.Accepted)
		enc, _ := zstd.NewWriter(nil)
		body := enc.EncodeAll([]byte(`[{"device_id":"good-4","stream":"s","value":6}]`), nil)
		status, r = post(t, p, "application/json", "zstd", body)
		require.Equal(t, 200, status, "%+v", r)
		require.Equal(t, 1, r.Accepted)
	})

	t.Run("garbage MQTT payloads", func(t *testing.T) {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + p.mqttAddr).SetClientID("bad-input"))
		tok := c.Connect()
		require.True(t, tok.WaitTimeout(5*time.Second))
		require.NoError(t, tok.Error())
		defer c.Disconnect(0)
		for _, m := range []struct{ topic, payload string }{
			{"devices/m1/s", "\x00\xff garbage"},
			{"devices/m1/s", `{"value":"NaN"}`},
			{"devices/m1/s", `{"device_id":"someone-else","value":1}`},
			{"devices/m1", "1"},
			{"devices/m1/s/extra", "1"},
			{"devices/m1/s", `{"value":1,"ts":` + fmt.Sprint(future) + `}`},
			{"devices/good-5/s", "7.5"},
		} {
			tok := c.Publish(m.topic, 1, false, m.payload)
			require.True(t, tok.WaitTimeout(5*time.Second), m.payload)
			require.NoError(t, tok.Error(), "MQTT 3.1.1 has no negative ack: bad payloads are acked and counted")
		}
	})

	// The node is still healthy and holds exactly the valid events.
	resp, err := http.Get(p.url("/healthz"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	var devices []string
	for _, e := range allEvents(t, p, "") {
		devices = append(devices, e.DeviceID)
	}
	require.ElementsMatch(t, []string{"good-1", "good-2", "good-3", "good-4", "good-5"}, devices)
	metrics := get(t, p, "/metrics")
	for _, want := range []string{
		`holdfast_events_rejected_total{reason="missing_field",transport="http"} 1`,
		`holdfast_events_rejected_total{reason="future_timestamp",transport="mqtt"} 1`,
		`holdfast_events_rejected_total{reason="bad_topic",transport="mqtt"} 2`,
		`holdfast_events_rejected_total{reason="too_large",transport="http"} 2`,
		`holdfast_events_accepted_total{transport="mqtt"} 1`,
	} {
		require.Contains(t, metrics, want)
	}

	// A query's mistakes are refused, naming the parameter.
	for path, want := range map[string]string{
		"/v1/events?devce_id=good-1": "unknown parameter devce_id (did you mean device_id?)",
		"/v1/windows?size=2m":        "size",
		"/v1/alerts?sate=firing":     "unknown parameter sate",
	} {
		resp, err := p.getResp(p.url(path))
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, path)
		require.Contains(t, string(body), want, path)
	}
}

func get(t *testing.T, p *proc, path string) string {
	t.Helper()
	resp, err := p.getResp(p.url(path))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}
