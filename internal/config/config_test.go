package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "holdfast.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	require.NoError(t, Default().Validate())
}

func TestLoadOverridesDefaults(t *testing.T) {
	cfg, err := Load(write(t, `
node_id: store-42
http:
  addr: 0.0.0.0:9000
  max_body_bytes: 4MiB
ingest:
  dedup_window: 30s
buffer:
  segment_bytes: 64MiB
  max_bytes: 10GB
mqtt:
  mode: external
  external:
    broker: tcp://10.0.0.5:1883
`))
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, "store-42", cfg.NodeID)
	require.Equal(t, "0.0.0.0:9000", cfg.HTTP.Addr)
	require.Equal(t, ByteSize(4<<20), cfg.HTTP.MaxBodyBytes)
	require.Equal(t, 30*time.Second, cfg.Ingest.DedupWindow)
	require.Equal(t, 5*time.Minute, cfg.Ingest.MaxFuture, "unset keys keep their default")
	require.Equal(t, "content", cfg.Ingest.DedupWithoutID, "unset keys keep their default")
	require.Equal(t, ByteSize(64<<20), cfg.Buffer.SegmentBytes)
	require.Equal(t, ByteSize(10e9), cfg.Buffer.MaxBytes)
	require.Equal(t, "devices/+/+", cfg.MQTT.External.Topic)
}

func TestEmptyFileIsDefaults(t *testing.T) {
	cfg, err := Load(write(t, ""))
	require.NoError(t, err)
	require.Equal(t, Default(), cfg)
}

func TestLoadErrorsNameTheKey(t *testing.T) {
	for name, c := range map[string]struct{ body, want string }{
		"unknown key":  {"htpp:\n  addr: x\n", "holdfast.yaml:1: htpp: unknown key (did you mean http?)"},
		"bad size":     {"buffer:\n  max_bytes: lots\n", `holdfast.yaml:2: buffer.max_bytes: "lots" is not a size`},
		"bad duration": {"ingest:\n  dedup_window: soon\n", "soon"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(write(t, c.body))
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	cfg := Default()
	cfg.HTTP.Addr = "localhost"
	cfg.MQTT.Mode = "bridge"
	cfg.Buffer.Engine = "rocksdb"
	cfg.Buffer.MaxBytes = cfg.Buffer.SegmentBytes
	cfg.Log.Level = "loud"
	cfg.MQTT.MaxConnectionsPerSource = -1
	cfg.HTTP.MaxConcurrentPerSource = 0
	cfg.Ingest.DedupWithoutID = "hash"
	err := cfg.Validate()
	for _, want := range []string{
		`http.addr: "localhost" is not host:port`,
		"http.max_concurrent_per_source: 0 must be at least 1",
		`mqtt.mode: "bridge" must be embedded, external or off`,
		`buffer.engine: "rocksdb" must be log, sqlite or pebble`,
		"buffer.max_bytes:",
		`log.level: "loud"`,
		"mqtt.max_connections_per_source: -1 must be 0 (no limit) or more",
		`ingest.dedup_without_id: "hash" must be content or off`,
	} {
		require.ErrorContains(t, err, want)
	}
	cfg = Default()
	cfg.Ingest.DedupWithoutID = "off"
	require.NoError(t, cfg.Validate())
	cfg = Default()
	cfg.MQTT.Mode = "external"
	require.ErrorContains(t, cfg.Validate(), "mqtt.external.broker")
	for _, prefix := range []string{"devices/alerts", "devices", "site/+/alerts", "alerts/#"} {
		cfg = Default()
		cfg.Alerts.Notify.MQTTTopicPrefix = prefix
		require.ErrorContains(t, cfg.Validate(), "alerts.notify.mqtt_topic_prefix", prefix)
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"0": 0, "512": 512, "64KiB": 64 << 10, "16 MiB": 16 << 20, "2GB": 2e9, "7B": 7} {
		got, err := ParseByteSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "-1", "1.5GiB", "12XB"} {
		_, err := ParseByteSize(in)
		require.Error(t, err, in)
	}
}

func TestStreamPriorities(t *testing.T) {
	c := Default()
	c.Streams = map[string]Stream{"door": {Priority: "critical"}, "hvac": {Priority: "low"}, "temp": {}}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid priorities: %v", err)
	}
	c.Streams = map[string]Stream{"door": {Priority: "urgent"}, "a/b": {}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `streams.door.priority: "urgent" must be one of critical, high, normal, low`) ||
		!strings.Contains(err.Error(), `stream name "a/b"`) {
		t.Fatalf("bad priorities: %v", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c := Default()
	c.NodeID = "edge-9"
	c.Streams = map[string]Stream{"door": {Priority: "critical"}}
	on := false
	c.Cloud.Compress = &on
	c.Cloud.HTTP = &HTTPSink{URL: "https://x.example/in", Timeout: 3 * time.Second}
	data, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(c, back) {
		t.Fatalf("round trip changed the config:\n%+v\n%+v\n%s", c, back, data)
	}
}

func TestSecurity(t *testing.T) {
	t.Chdir(t.TempDir()) // the TLS files must exist to validate
	for _, f := range []string{"node.crt", "node.key", "ca.crt"} {
		require.NoError(t, os.WriteFile(f, []byte("pem"), 0o600))
	}
	cfg, err := Parse([]byte(`
security:
  devices: /etc/holdfast/devices.yaml
  tokens: tokens.yaml
  tls: {cert: node.crt, key: node.key, client_ca: ca.crt}
  insecure: true
`))
	require.NoError(t, err)
	require.Equal(t, Security{
		Devices: "/etc/holdfast/devices.yaml", Tokens: "tokens.yaml",
		TLS:      TLS{Cert: "node.crt", Key: "node.key", ClientCA: "ca.crt"},
		Insecure: true,
	}, cfg.Security)
	require.NoError(t, cfg.Validate())

	for body, key := range map[string]string{
		"security: {tls: {cert: a.crt}}":    "security.tls.cert:",
		"security: {tls: {client_ca: ca}}":  "security.tls.client_ca:",
		"security: {devices: x, tokens: x}": "security.tokens:",
		"security: {devices: \"a\\nb\"}":    "security.devices:",
	} {
		cfg, err := Parse([]byte(body))
		require.NoError(t, err, body)
		err = cfg.Validate()
		require.ErrorContains(t, err, key, body)
	}
	_, err = Parse([]byte("security: {tls: {ca: x}}"))
	require.Error(t, err, "unknown keys are errors")
}
