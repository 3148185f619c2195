package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestReadyz: /readyz answers 200 while the node takes writes, a sink
// offline included, and 503 with the reasons when its buffer failed, is at
// emergency or full, or it is an HA standby; /healthz stays as it was.
func TestReadyz(t *testing.T) {
	cases := []struct {
		name   string
		status Status
		code   int
		reason string
	}{
		{"normal", Status{Healthy: true, Buffer: BufferStatus{Level: "normal"}}, 200, ""},
		{"sink offline", Status{Healthy: true, Buffer: BufferStatus{Level: "warning"}, Problems: []string{"sink cloud offline"}}, 200, ""},
		{"emergency", Status{Healthy: true, Buffer: BufferStatus{Level: "emergency"}}, 503, "buffer pressure emergency: only critical streams are taken"},
		{"full", Status{Healthy: true, Buffer: BufferStatus{Level: "full"}}, 503, "buffer full: no events are taken"},
		{"failed", Status{Buffer: BufferStatus{Level: "full", Error: "EIO"}}, 503, "buffer failed, nothing is acknowledged: EIO"},
		{"standby", Status{Healthy: true, Buffer: BufferStatus{Level: "normal"},
			HA: &HAStatus{Role: "standby", Primary: &HAPrimary{HTTP: "http://10.0.0.1:8080"}}}, 503, "ha standby: writes go to the primary at http://10.0.0.1:8080"},
		{"primary", Status{Healthy: true, Buffer: BufferStatus{Level: "normal"}, HA: &HAStatus{Role: "primary"}}, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := New(Options{Ingest: http.NotFoundHandler(), Gatherer: prometheus.NewRegistry(), Status: func() Status { return c.status }})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			if rec.Code != c.code {
				t.Fatalf("code %d, want %d: %s", rec.Code, c.code, rec.Body)
			}
			var body struct {
				Status  string   `json:"status"`
				Reasons []string `json:"reasons"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if c.reason == "" && len(body.Reasons) != 0 || c.reason != "" && (len(body.Reasons) == 0 || body.Reasons[0] != c.reason) {
				t.Fatalf("reasons %q, want %q", body.Reasons, c.reason)
			}
		})
	}
}

func TestHistoryRates(t *testing.T) {
	h := NewHistory()
	t0 := time.Unix(1_700_000_000, 0)
	h.Add(Sample{At: t0}, Counters{Accepted: 100, Acks: 10, AckTime: 10 * time.Millisecond})
	h.Add(Sample{At: t0.Add(10 * time.Second)}, Counters{Accepted: 1100, Acks: 20, AckTime: 30 * time.Millisecond})
	s := h.Samples()
	if len(s) != 2 || s[1].IngestRate != 100 || s[1].AckMeanSeconds != 0.002 {
		t.Fatalf("samples %+v", s)
	}
	if r, _ := h.Rates(t0.Add(15*time.Second), Counters{Accepted: 1600}); r != 100 {
		t.Fatalf("live rate %v", r)
	}
	for i := range HistoryKeep + 5 {
		h.Add(Sample{At: t0.Add(time.Duration(i+2) * 10 * time.Second)}, Counters{})
	}
	if n := len(h.Samples()); n != HistoryKeep {
		t.Fatalf("%d samples kept", n)
	}
}
