package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
	for _, want := range []string{"healthy", "offsets 0–2", "processing  ", "sync        off"} {
		require.Contains(t, string(out), want)
	}
	require.Len(t, allEvents(t, p, ""), 2)
	require.Len(t, allEvents(t, p, "&device_id=b"), 1)
	require.True(t, strings.Contains(get(t, p, "/v1/status"), `"next_offset":2`))
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
