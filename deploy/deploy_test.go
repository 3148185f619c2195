// Package deploy holds the deployment kit (systemd unit, Dockerfile,
// Grafana dashboard, Prometheus rules); its test checks that they name only
// metrics the node exports.
package deploy

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	metricRef  = regexp.MustCompile(`\b(holdfast_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+)\b`)
	metricDecl = regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(holdfast_[a-z0-9_]+)"`)
	histogram  = regexp.MustCompile(`_(bucket|sum|count)$`)
)

// exported returns the metric names the node's code declares: every
// holdfast_ name given to a collector, and the Go and process collectors'
// that node.go registers.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir("../internal", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricDecl.FindAllStringSubmatch(string(b), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	node, err := os.ReadFile("../internal/node/node.go")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(node), "collectors.NewProcessCollector") {
		names["process_resident_memory_bytes"] = true
	}
	if len(names) < 50 {
		t.Fatalf("found only %d metric names: is the scan broken?", len(names))
	}
	return names
}

// TestDashboardMetricsExist: every metric the Grafana dashboard and the
// Prometheus rules query is one the node exports.
func TestDashboardMetricsExist(t *testing.T) {
	names := exported(t)
	for _, file := range []string{"grafana/holdfast-dashboard.json", "prometheus/holdfast-alerts.yml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(file, ".json") {
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
		}
		refs := metricRef.FindAllString(string(b), -1)
		if len(refs) == 0 {
			t.Fatalf("%s names no metric", file)
		}
		for _, r := range refs {
			base := histogram.ReplaceAllString(r, "")
			if !names[r] && !names[base] {
				t.Errorf("%s uses %s, which the node does not export", file, r)
			}
		}
	}
}
