package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"

	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// chromium returns a Chromium or Chrome binary, or skips the test — or
// fails it when HOLDFAST_REQUIRE_CHROMIUM is set (as .ci/run sets it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("HOLDFAST_REQUIRE_CHROMIUM") != "" {
		t.Fatal("no chromium binary on PATH and HOLDFAST_REQUIRE_CHROMIUM is set: apt-get install chromium")
	}
	t.Skip("no chromium binary on PATH (apt-get install chromium); set HOLDFAST_REQUIRE_CHROMIUM=1 to fail instead")
	return ""
}

// TestStatusPageShowsCloudOutage opens the status page of the real binary
// in headless Chromium, stops the cloud, and requires the page to show the
// outage — the headline no longer "ok", the sink's row not connected —
// within 5 s of /v1/status reporting it. A screenshot of the page during
// the outage is kept in $HOLDFAST_ARTIFACTS (or the test's temp dir).
func TestStatusPageShowsCloudOutage(t *testing.T) {
	browser := chromium(t)
	dir := t.TempDir()
	addr := testutil.FreeAddr(t)
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: addr})
	require.NoError(t, err)
	defer srv.Close()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf("cloud:\n  url: nats://%s\n", addr))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "page-1")
	code, r := post(t, p, "application/json", "", []byte(`[{"device_id":"d1","stream":"temp","value":21.5},{"device_id":"d2","stream":"temp","value":22}]`))
	require.Equal(t, 200, code, "%+v", r)
	waitFor(t, "connected and synced", 30*time.Second, func() bool { s := sinkOf(t, p); return s.State == "connected" && s.Lag == 0 })

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser),
		chromedp.NoSandbox, chromedp.WindowSize(1280, 1400))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	var state string
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(p.url("/")), chromedp.WaitVisible(chromedp.CSS(`#headline`))))
	dom := func(js string) string {
		out, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		require.NoError(t, err)
		return out
	}
	headline := `document.getElementById("headline").dataset.state`
	sinkRow := `(document.querySelector('tr[data-sink="cloud"]') || {dataset: {}}).dataset.state || ""`
	waitFor(t, "the page to show all well", 20*time.Second, func() bool {
		state = dom(headline)
		return state == "ok" && dom(sinkRow) == "connected"
	})

	// The cloud goes away.
	require.NoError(t, srv.Close())
	waitFor(t, "the status to report the outage", 30*time.Second, func() bool { return sinkOf(t, p).State != "connected" })
	reported := time.Now()
	deadline := reported.Add(5 * time.Second)
	for {
		state = dom(headline)
		row := dom(sinkRow)
		if state != "ok" && state != "unknown" && row != "" && row != "connected" {
			t.Logf("the page showed the outage %v after the status reported it: headline %q, sink %q",
				time.Since(reported).Round(time.Millisecond), state, row)
			break
		}
		require.True(t, time.Now().Before(deadline), "the page still shows headline %q, sink %q 5 s after the status reported the outage", state, row)
		time.Sleep(100 * time.Millisecond)
	}
	require.Contains(t, dom(`document.getElementById("reasons").textContent`), "sink cloud")

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	out := os.Getenv("HOLDFAST_ARTIFACTS")
	if out == "" {
		out = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(out, 0o755))
	shot := filepath.Join(out, "status-page-cloud-outage.png")
	require.NoError(t, os.WriteFile(shot, png, 0o644))
	t.Logf("screenshot of the page during the outage: %s", shot)
}
