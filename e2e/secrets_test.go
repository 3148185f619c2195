package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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

	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// secrets are distinctive values put in every secret the config has; none
// may be found anywhere the node or recover shows or sends.
var secrets = []string{
	"SECRET-WEBHOOK-7f3a",      // webhook Authorization header
	"SECRET-APIKEY-91c2",       // webhook X-Api-Key header
	"SECRET-HOOK-URLPASS-5d1",  // webhook URL userinfo password
	"SECRET-HOOK-QUERY-e4b0",   // webhook URL query value
	"SECRET-NATS-PASS-2a9c",    // cloud.url userinfo password
	"SECRET-HTTP-BEARER-77d4",  // cloud.http header
	"SECRET-HTTP-QUERY-0b3e",   // cloud.http URL query value
	"SECRET-BRIDGE-PASS-c8f1",  // cloud.mqtt password
	"SECRET-BRIDGE-URL-6e2d",   // cloud.mqtt broker URL userinfo password
	"SECRET-MQTT-PASS-43aa",    // mqtt.external password
	"SECRET-SITE-URLPASS-19ab", // mqtt.external broker URL userinfo password
}

// secretKeys are the keys the recovered config must ask for again.
var secretKeys = []string{
	"alerts.notify.webhooks[0].headers.Authorization",
	"alerts.notify.webhooks[0].headers.X-Api-Key",
	"alerts.notify.webhooks[0].url",
	"cloud.http.headers.Authorization",
	"cloud.http.url",
	"cloud.mqtt.broker",
	"cloud.mqtt.password",
	"cloud.url",
	"mqtt.external.broker",
	"mqtt.external.password",
}

// requireNoSecret reports (and goes on: every leak is listed) each secret
// that text holds.
func requireNoSecret(t *testing.T, where, text string) {
	t.Helper()
	var found []string
	for _, s := range secrets {
		if strings.Contains(text, s) {
			found = append(found, s)
		}
	}
	if len(found) > 0 {
		t.Errorf("%s holds the secrets %v:\n%s", where, found, text)
	}
}

// TestSecretsStayOnTheNode runs the binary, at debug level, with a config
// full of distinctive secrets — webhook headers and URL credentials, sink
// headers, broker and cloud passwords — lets it publish its config to an
// embedded cloud's registry, subscribe to a site broker (another holdfast's
// embedded one) with a password in its URL, fire an alert at the webhook
// (which must get the real header: the running node keeps its secrets) and
// fail to reach an MQTT bridge whose URL has a password. Then none of the secrets is in
// /v1/status, /metrics, the status page, the process's output, the registry's
// entry, or what `holdfast recover --from-cloud` prints and writes. The
// recovered config is refused by `holdfast run` and `holdfast config check`,
// naming every key to supply again.
func TestSecretsStayOnTheNode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := localCloud(t, dir)

	var mu sync.Mutex
	var hookAuth []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hookAuth = append(hookAuth, r.Header.Get("Authorization")+" "+r.Header.Get("X-Api-Key"))
		mu.Unlock()
	}))
	defer hook.Close()
	sink := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer sink.Close()

	site := start(t, filepath.Join(dir, "site"))
	natsURL := strings.Replace(srv.URL(), "nats://", "nats://edge:SECRET-NATS-PASS-2a9c@", 1)
	hookURL := strings.Replace(hook.URL, "http://", "http://hook:SECRET-HOOK-URLPASS-5d1@", 1) + "/alerts?token=SECRET-HOOK-QUERY-e4b0"
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
log: {level: debug}
checkpoints: {snapshot_interval: 1s}
mqtt:
  mode: external
  external: {broker: "tcp://site:SECRET-SITE-URLPASS-19ab@%s", username: holdfast, password: SECRET-MQTT-PASS-43aa}
alerts:
  rules:
    - {name: hot, stream: temp, op: ">", threshold: 50, severity: critical}
  notify:
    webhooks:
      - url: %s
        headers: {Authorization: "Bearer SECRET-WEBHOOK-7f3a", X-Api-Key: SECRET-APIKEY-91c2}
cloud:
  url: %s
  http:
    url: %s/ingest?api_key=SECRET-HTTP-QUERY-0b3e
    headers: {Authorization: "Bearer SECRET-HTTP-BEARER-77d4"}
  mqtt:
    broker: tcp://bridge:SECRET-BRIDGE-URL-6e2d@127.0.0.1:1
    username: bridge
    password: SECRET-BRIDGE-PASS-c8f1
`, site.mqttAddr, hookURL, natsURL, sink.URL))

	p, out := startCapturing(t, filepath.Join(dir, "data"), "--config", cfg, "--node-id", "site-s")
	ts := time.Now().UnixMilli()
	resp, err := http.Post(p.url("/v1/events"), "application/x-ndjson",
		strings.NewReader(fmt.Sprintf(`{"device_id":"d1","stream":"temp","ts":%d,"value":99,"id":"e1"}`+"\n", ts)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	waitFor(t, "the webhook to get the alert", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hookAuth) > 0
	})
	mu.Lock()
	require.Equal(t, "Bearer SECRET-WEBHOOK-7f3a SECRET-APIKEY-91c2", hookAuth[0], "the running node sends the real headers")
	mu.Unlock()
	var status string
	waitFor(t, "the config in the registry, the site broker connected and the MQTT bridge failing", 30*time.Second, func() bool {
		status = get(t, p, "/v1/status")
		var s struct {
			Backup struct {
				Rev uint64 `json:"config_revision"`
			} `json:"backup"`
			MQTT struct {
				Addr      string `json:"addr"`
				Connected *bool  `json:"connected"`
			} `json:"mqtt"`
		}
		return json.Unmarshal([]byte(status), &s) == nil && s.Backup.Rev > 0 &&
			s.MQTT.Connected != nil && *s.MQTT.Connected && strings.Contains(s.MQTT.Addr, site.mqttAddr) &&
			strings.Contains(out.String(), "127.0.0.1:1")
	})
	requireNoSecret(t, "/v1/status", status)
	requireNoSecret(t, "/metrics", get(t, p, "/metrics"))
	requireNoSecret(t, "the status page", get(t, p, "/"))
	p.stop(t)
	require.Contains(t, out.String(), `level=DEBUG`)
	requireNoSecret(t, "the node's output", out.String())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := cloud.ConfigAt(ctx, cloudJS(t, srv.URL()), "site-s", time.Time{})
	require.NoError(t, err)
	requireNoSecret(t, "the registry's config", string(v.YAML))
	require.Contains(t, string(v.YAML), "<redacted>", "the registry's config")

	data := filepath.Join(dir, "recovered")
	rec, err := exec.Command(binary, "recover", "--from-cloud", "--node-id", "site-s", "--cloud-url", srv.URL(),
		"--data-dir", data).CombinedOutput()
	require.NoError(t, err, "%s", rec)
	t.Logf("recover:\n%s", rec)
	requireNoSecret(t, "recover's output", string(rec))
	for _, k := range secretKeys {
		require.Contains(t, string(rec), k, "recover names the keys to fill in")
	}
	recovered := filepath.Join(data, "holdfast.yaml")
	yaml, err := os.ReadFile(recovered)
	require.NoError(t, err)
	requireNoSecret(t, "the recovered holdfast.yaml", string(yaml))
	require.True(t, strings.HasPrefix(string(yaml), "# holdfast recover:"), "holdfast.yaml opens with the keys to fill in:\n%s", yaml)

	for _, args := range [][]string{
		{"run", "--config", recovered, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"},
		{"config", "check", recovered},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		got, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
		cancel()
		require.Error(t, err, "holdfast %s accepted a config with redacted secrets:\n%s", args[0], got)
		for _, k := range secretKeys {
			require.Contains(t, string(got), k+" is redacted: supply the secret again", "holdfast %s", args[0])
		}
	}
}

// lockedBuffer collects a process's stdout and stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startCapturing is start with stdout and stderr both kept, in one buffer.
func startCapturing(t *testing.T, dataDir string, args ...string) (*proc, *lockedBuffer) {
	t.Helper()
	all := append([]string{"run", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"}, args...)
	out := &lockedBuffer{}
	p := &proc{cmd: exec.Command(binary, all...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	require.NoError(t, p.cmd.Start())
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	waitFor(t, "holdfast to be ready", 30*time.Second, func() bool {
		m := readyRE.FindStringSubmatch(out.String())
		if m != nil {
			p.httpAddr, p.mqttAddr = m[1], m[2]
		}
		select {
		case <-p.done:
			t.Fatalf("holdfast exited before ready:\n%s", out.String())
		default:
		}
		return m != nil
	})
	return p, out
}
