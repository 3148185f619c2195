package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func renderFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var s statusDoc
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	renderStatus(&out, &s, time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	return out.String()
}

// TestStatusRenderingOffline: the faults of issue 17 are gone — late
// events read "temperature 1", not a Go map; "offline since" appears once,
// in human units, with no nanosecond timestamp; each lane's own lag is
// shown; the headline needs attention; notifier failures show.
func TestStatusRenderingOffline(t *testing.T) {
	out := renderFixture(t, "status-offline.json")
	t.Log("\n" + out)
	for _, want := range []string{
		"holdfast edge-1  v1.4.0  up 3h0m0s  NEEDS ATTENTION",
		"! sink cloud offline",
		"! sink cloud: circuit breaker open",
		"! 1 alert firing",
		"! buffer pressure warning",
		"! notifier webhook failed 1 min ago",
		"late events: temperature 1",
		"1234.5 events/s, ack 2.1 ms (mean), 123.5k acknowledged since start",
		"pressure warning since 2 min ago: 624.7 MiB unsynced of 1.0 GiB (61.0%)",
		"offline since 3 min ago",
		"2345 records (1.2 MiB)",
		"cloud lanes behind: critical 3, normal 2342",
		"(14 in a row)",
		"sink-offline",
		"webhook webhook: 503 Service Unavailable, 1 min ago",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Contains(out, "map[") {
		t.Error("a Go map is printed")
	}
	if n := strings.Count(out, "offline since"); n != 1 {
		t.Errorf("\"offline since\" %d times", n)
	}
	if regexp.MustCompile(`\d\d:\d\d:\d\d\.\d{4,}`).MatchString(out) {
		t.Error("a timestamp with sub-millisecond digits is printed")
	}
}

// TestStatusRenderingConnected: all well reads OK, with no stale error.
func TestStatusRenderingConnected(t *testing.T) {
	out := renderFixture(t, "status-connected.json")
	t.Log("\n" + out)
	if !strings.HasPrefix(out, "holdfast edge-1  v1.4.0  up 3h0m0s  OK\n") {
		t.Errorf("headline: %q", strings.SplitN(out, "\n", 2)[0])
	}
	for _, want := range []string{"connected since 1 min ago", "Alerts firing: none", "Losses      none", "late events: none",
		"Level       degradation normal since", "ingestion full, windowing all", "Triggers    cpu 0.12 steady, buffer 0.01 down"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Contains(out, "!") || strings.Contains(out, "lanes behind") {
		t.Error("attention or lanes shown while all is well")
	}
}

func TestNormaliseAddr(t *testing.T) {
	cases := []struct {
		in   string
		tls  bool
		want string
		err  bool
	}{
		{"127.0.0.1:8080", false, "http://127.0.0.1:8080", false},
		{"http://127.0.0.1:8080", false, "http://127.0.0.1:8080", false},
		{"http://127.0.0.1:8080/", false, "http://127.0.0.1:8080", false},
		{"http://127.0.0.1:8080/v1/status", false, "http://127.0.0.1:8080", false},
		{"https://edge.example:8443", false, "https://edge.example:8443", false},
		{"edge.example:8443", true, "https://edge.example:8443", false},
		{"https://edge.example:8443", true, "https://edge.example:8443", false},
		{"http://edge.example:8080", true, "", true},
		{"edge01", false, "http://edge01:8080", false},
		{"http://edge01", false, "http://edge01:8080", false},
		{":9090", false, "http://127.0.0.1:9090", false},
		{"[::1]:8080", false, "http://[::1]:8080", false},
		{" 10.0.0.5:8080 ", false, "http://10.0.0.5:8080", false},
		{"ftp://x:21", false, "", true},
		{"", false, "", true},
	}
	for _, c := range cases {
		got, err := normaliseAddr(c.in, c.tls)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("normaliseAddr(%q, %v) = %q, %v; want %q, error %v", c.in, c.tls, got, err, c.want, c.err)
		}
	}
}

// TestStatusRenderingSite: a site member's status lists every member with
// its state, address, zone and load, and marks this node.
func TestStatusRenderingSite(t *testing.T) {
	b, err := os.ReadFile("testdata/status-connected.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	doc["site"] = map[string]any{"self": "edge-1", "assign": "geographic", "zone": "hall-a", "members": []any{
		map[string]any{"node_id": "edge-1", "http": "http://10.0.0.11:8080", "zone": "hall-a", "state": "alive",
			"load": map[string]any{"events_per_s": 1500.0, "cpu": 0.25, "buffer": 0.1, "lag_records": 12}},
		map[string]any{"node_id": "edge-2", "http": "http://10.0.0.12:8080", "zone": "hall-b", "state": "dead",
			"load": map[string]any{}},
	}}
	b, _ = json.Marshal(doc)
	var s statusDoc
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	renderStatus(&out, &s, time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	t.Log("\n" + out.String())
	for _, re := range []string{
		`Site +geographic assignment, 1 of 2 members alive, this node in zone hall-a`,
		`edge-1 \(this node\) +alive +http://10\.0\.0\.11:8080 +zone hall-a +1500 events/s +cpu 25 % +buffer 10 % +lag 12`,
		`edge-2 +dead +http://10\.0\.0\.12:8080 +zone hall-b`,
	} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("no line matching %q", re)
		}
	}
}

// TestStatusRenderingAggregatesOnly: a sink limited to aggregates by the
// degradation level says so under the sync table.
func TestStatusRenderingAggregatesOnly(t *testing.T) {
	b, err := os.ReadFile("testdata/status-connected.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	sinks, _ := doc["sinks"].([]any)
	if len(sinks) == 0 {
		t.Fatal("the fixture has no sink")
	}
	sinks[0].(map[string]any)["aggregates_only"] = true
	b, _ = json.Marshal(doc)
	var s statusDoc
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	renderStatus(&out, &s, time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	if !regexp.MustCompile(`syncs aggregates only \(degradation level limited\): only the critical lane, window results and alerts go`).MatchString(out.String()) {
		t.Errorf("no aggregates-only line:\n%s", out.String())
	}
}
