// Package config holds holdfast's configuration: one struct per component, the
// defaults that make `holdfast run` work with no file, YAML loading that rejects
// unknown keys, and validation with messages that name the offending key.
// gopkg.in/yaml.v3 does the YAML parsing.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pressure"
	"github.com/holdfast-edge/holdfast/internal/secret"
)

// Config is the whole node configuration.
//
// A field that holds a secret carries the struct tag `secret:"true"` (the
// whole string; every value of a map or element of a slice) or `secret:"url"`
// (a URL's userinfo password and query values): Redacted replaces them, so
// the config the node publishes to the cloud's registry — and the one
// `holdfast recover` writes back — holds none (internal/secret).
type Config struct {
	// NodeID names this node; it is a token of the cloud's NATS subjects
	// and of MQTT topics (--node-id). Default: the host name made valid
	// (dots, spaces and slashes become dashes).
	NodeID string `yaml:"node_id"`
	// DataDir is the directory of the node's buffer and state (--data-dir).
	DataDir     string      `yaml:"data_dir"`
	HTTP        HTTP        `yaml:"http"`
	MQTT        MQTT        `yaml:"mqtt"`
	Ingest      Ingest      `yaml:"ingest"`
	Buffer      Buffer      `yaml:"buffer"`
	Windows     Windows     `yaml:"windows"`
	Alerts      Alerts      `yaml:"alerts"`
	Cloud       Cloud       `yaml:"cloud"`
	Log         Log         `yaml:"log"`
	Checkpoints Checkpoints `yaml:"checkpoints"`
	Security    Security    `yaml:"security"`
	HA          HA          `yaml:"ha"`
	Site        Site        `yaml:"site"`
	Clock       Clock       `yaml:"clock"`
	Degradation Degradation `yaml:"degradation"`
	Limits      Limits      `yaml:"limits"`
	// Streams configures streams by name; a stream not listed takes the
	// defaults.
	Streams map[string]Stream `yaml:"streams"`
}

// Security configures who may talk to the node (docs/format/auth.md). Paths
// are used as given: a relative path is relative to the working directory,
// like data_dir.
type Security struct {
	// Devices is the devices file `holdfast device add` writes: device
	// tokens for HTTP ingest and MQTT. "" = no device credentials.
	Devices string `yaml:"devices"`
	// Tokens is the API tokens file `holdfast token add` writes (roles read
	// and admin). "" = no API tokens.
	Tokens string `yaml:"tokens"`
	// TLS for the HTTP and MQTT listeners.
	TLS TLS `yaml:"tls"`
	// Insecure accepts listening on a non-loopback address without
	// authentication (--insecure).
	Insecure bool `yaml:"insecure"`
}

// TLS configures the listeners' TLS: with Cert and Key (PEM files), the HTTP
// listener serves HTTPS and the embedded broker MQTT over TLS. The files are
// read again on SIGHUP.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA, when set, makes the listeners ask for client certificates
	// signed by it (mTLS).
	ClientCA string `yaml:"client_ca"`
}

// Checkpoints configures checkpoints of the processing state and snapshots
// (docs/format/checkpoint.md).
type Checkpoints struct {
	Interval         time.Duration `yaml:"interval"`          // default 30s
	Keep             int           `yaml:"keep"`              // default 3
	SnapshotInterval time.Duration `yaml:"snapshot_interval"` // default 1h
	SnapshotKeep     int           `yaml:"snapshot_keep"`     // default 24
}

// Stream configures one event stream.
type Stream struct {
	// Priority is critical, high, normal (the default) or low: the sync lane
	// of the stream's records (docs/format/lanes.md).
	Priority string `yaml:"priority"`
}

// Priorities are the stream priority classes, highest first.
var Priorities = []string{"critical", "high", "normal", "low"}

// Cloud configures sync to the cloud ingest (NATS JetStream).
type Cloud struct {
	// URL of the cloud's NATS server, e.g. nats://cloud.example:4222; "" keeps
	// everything local.
	URL string `yaml:"url" secret:"url"`
	// Links are several ways to the same cloud, in order of preference.
	// Set, they replace url for sync: the node fails over from a link that
	// is down to the next and back to a preferred one once it answers; url
	// (else the first link) serves snapshots, the config registry and
	// recover.
	Links []CloudLink `yaml:"links,omitempty"`
	// EnsureLayout creates the streams if the cloud lacks them (a NATS cluster
	// no `holdfast cloud` has set up).
	EnsureLayout bool          `yaml:"ensure_layout"`
	BatchRecords int           `yaml:"batch_records"` // records per batch sent
	MaxDelay     time.Duration `yaml:"max_delay"`     // wait for a batch to fill at most this long
	// OfflineAlertAfter is how long a sink may stay offline before the node
	// raises the sink-offline alert (resolved when the sink reconnects);
	// default 1m (DefaultOfflineAlertAfter).
	OfflineAlertAfter time.Duration `yaml:"offline_alert_after"`
	// Compress sends JetStream batches as zstd frames; default true.
	Compress *bool `yaml:"compress"`
	// HTTP and MQTT are further sinks, each with its own cursor: a receiver
	// that takes NDJSON batches, and a bridge to a remote MQTT broker
	// (docs/format/sinks.md).
	HTTP *HTTPSink `yaml:"http"`
	MQTT *MQTTSink `yaml:"mqtt"`
	// Credentials for the NATS server: user and password, or a token, or a
	// NATS creds file (JWT and seed). CA is a PEM file of the CAs to trust
	// for tls:// (or a server requiring TLS); Cert and Key a client
	// certificate. Every connection to the cloud uses them: the sink,
	// snapshots, the config registry, and `holdfast recover --config`.
	User     string `yaml:"user,omitempty"`
	Password string `yaml:"password,omitempty" secret:"true"`
	Token    string `yaml:"token,omitempty" secret:"true"`
	Creds    string `yaml:"creds,omitempty"`
	CA       string `yaml:"ca,omitempty"`
	Cert     string `yaml:"cert,omitempty"`
	Key      string `yaml:"key,omitempty"`
}

// HTTPSink configures the HTTP sink.
type HTTPSink struct {
	URL      string            `yaml:"url" secret:"url"`
	Headers  map[string]string `yaml:"headers,omitempty" secret:"true"` // every value
	Timeout  time.Duration     `yaml:"timeout"`
	Compress *bool             `yaml:"compress"` // zstd, default true
	// CA is a PEM file of the CAs to trust for https (default: the
	// system's); Cert and Key a client certificate.
	CA   string `yaml:"ca,omitempty"`
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
}

// MQTTSink configures the MQTT bridge sink.
type MQTTSink struct {
	Broker      string `yaml:"broker" secret:"url"` // tcp://host:port, ssl://host:8883
	ClientID    string `yaml:"client_id"`
	Username    string `yaml:"username"`
	Password    string `yaml:"password" secret:"true"`
	TopicPrefix string `yaml:"topic_prefix"`
	// CA, Cert and Key are as in HTTPSink (cloud.http), for ssl:// and
	// tls:// brokers.
	CA   string `yaml:"ca,omitempty"`
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
}

// Windows configures windowed aggregation.
type Windows struct {
	// Enabled turns stream processing (windows and alerts) on; off, the node
	// only stores and serves raw events. Default true.
	Enabled bool `yaml:"enabled"`
	// Sizes are the sizes of the tumbling event-time windows, each
	// aggregated per device and site-wide.
	Sizes []time.Duration `yaml:"sizes"`
	// AllowedLateness is subtracted from the highest event time seen to get
	// the watermark: how late an event may be and still count in its window.
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	// IdleTimeout closes a quiet stream's windows on wall-clock time; the
	// quiet time is measured on the monotonic clock, so a clock jump closes
	// none early or late.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	Accuracy    float64       `yaml:"accuracy"` // relative error of p50/p95/p99
	Workers     int           `yaml:"workers"`  // 0: one per CPU
	// Split spreads a hot stream's devices over the workers (its site-wide
	// windows stay on one): auto splits the streams with a stream_skew or
	// key_skew hot spot, for at least 5 minutes, with 3 workers or more
	// (with fewer the workers keep up with the processor's reader anyway);
	// all splits every stream; off none. Results are the same either way,
	// bit for bit.
	Split string `yaml:"split"`
}

// Alerts configures alert rules and where alerts go.
type Alerts struct {
	Rules  []alert.Rule `yaml:"rules,omitempty"`
	Notify Notify       `yaml:"notify"`
}

// Notify configures alert notifiers. The log always gets every alert.
type Notify struct {
	Webhooks []alert.WebhookOptions `yaml:"webhooks,omitempty"`
	// MQTTTopicPrefix publishes alerts under <prefix>/<severity>/<rule> on
	// the broker MQTT ingest uses: the embedded one, or in external mode the
	// site's broker (on the subscriber's connection); nowhere with mqtt.mode
	// off. "" disables it.
	MQTTTopicPrefix string `yaml:"mqtt_topic_prefix"`
	// Backup runs a command (e.g. an SMS gateway script) for critical alerts
	// when a primary notifier fails.
	Backup *alert.CommandOptions `yaml:"backup"`
}

// HTTP configures the HTTP listener (ingest, queries, metrics).
type HTTP struct {
	Addr         string   `yaml:"addr"`           // host:port to listen on (--http-addr)
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"` // after decompression
	// MaxConcurrentPerSource bounds the requests one source address (IPv6:
	// its /64) has in progress at once; over it the node answers 429.
	MaxConcurrentPerSource int `yaml:"max_concurrent_per_source"`
}

// MQTT configures MQTT ingest.
type MQTT struct {
	// Mode is embedded (holdfast's own broker), external (subscribe to a site
	// broker) or off.
	Mode       string   `yaml:"mode"`
	Addr       string   `yaml:"addr"` // embedded broker listener
	MaxPayload ByteSize `yaml:"max_payload"`
	// MaxConnectionsPerSource bounds the embedded broker's connections from
	// one IP address (default 100); more are refused at CONNECT. 0: no limit.
	MaxConnectionsPerSource int      `yaml:"max_connections_per_source"`
	External                External `yaml:"external"`
}

// External configures subscribing to a site's existing broker.
type External struct {
	Broker   string `yaml:"broker" secret:"url"` // tcp://host:port
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	Password string `yaml:"password" secret:"true"`
	Topic    string `yaml:"topic"`
	// CA, Cert and Key are as in HTTPSink (cloud.http), for ssl:// and
	// tls:// brokers.
	CA   string `yaml:"ca,omitempty"`
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
}

// Ingest configures validation and retry de-duplication.
type Ingest struct {
	MaxFuture       time.Duration `yaml:"max_future"`        // an event's ts may be at most this far after now
	DedupWindow     time.Duration `yaml:"dedup_window"`      // how long an event id is remembered to drop a retry
	DedupMaxEntries int           `yaml:"dedup_max_entries"` // at most this many ids (and content keys) remembered
	// DedupWithoutID says whether an event with no id is de-duplicated:
	// content (one with the device's own ts is a retry if an event with the
	// same device, stream, ts, value and tags was stored within
	// dedup_window; one without ts never is) or off (never). See
	// docs/format/dedup.md.
	DedupWithoutID string `yaml:"dedup_without_id"`
}

// Buffer configures the durable buffer.
type Buffer struct {
	Engine       string   `yaml:"engine"`        // log, sqlite or pebble (--buffer-engine)
	SegmentBytes ByteSize `yaml:"segment_bytes"` // size of one log segment file
	MaxBytes     ByteSize `yaml:"max_bytes"`     // the buffer's capacity: pressure levels are fractions of it
	// Pressure are the utilisations (of max_bytes, 0–1) at which the buffer's
	// pressure levels start, and the margin by which each clears.
	Pressure pressure.Thresholds `yaml:"pressure"`
}

// Log configures holdfast's own logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Default returns the configuration `holdfast run` uses with no file.
func Default() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "holdfast"
	}
	return defaultsFor(host)
}

// defaultsFor is Default on a host named host.
func defaultsFor(host string) Config {
	return Config{
		NodeID:  ValidNodeID(host),
		DataDir: "./holdfast-data",
		HTTP:    HTTP{Addr: "127.0.0.1:8080", MaxBodyBytes: 16 << 20, MaxConcurrentPerSource: 64},
		MQTT: MQTT{
			Mode:       "embedded",
			Addr:       "127.0.0.1:1883",
			MaxPayload: 64 << 10,
			// mqttin.DefaultMaxConnectionsPerSource (config does not import mqttin)
			MaxConnectionsPerSource: 100,
			External:                External{Topic: "devices/+/+", ClientID: "holdfast-" + host},
		},
		Ingest: Ingest{MaxFuture: 5 * time.Minute, DedupWindow: 10 * time.Minute, DedupMaxEntries: 1_000_000, DedupWithoutID: "content"},
		Buffer: Buffer{Engine: "log", SegmentBytes: 16 << 20, MaxBytes: 1 << 30, Pressure: pressure.DefaultThresholds},
		Windows: Windows{
			Enabled:         true,
			Sizes:           []time.Duration{time.Minute, 5 * time.Minute, time.Hour},
			AllowedLateness: 30 * time.Second,
			IdleTimeout:     time.Minute,
			Split:           "auto",
			Accuracy:        0.01,
		},
		Alerts:      Alerts{Notify: Notify{MQTTTopicPrefix: "holdfast/alerts"}},
		Cloud:       Cloud{BatchRecords: 1000, MaxDelay: 100 * time.Millisecond, OfflineAlertAfter: DefaultOfflineAlertAfter},
		Log:         Log{Level: "info", Format: "text"},
		Checkpoints: Checkpoints{Interval: 30 * time.Second, Keep: 3, SnapshotInterval: time.Hour, SnapshotKeep: 24},
		HA:          HADefaults(),
		Site:        SiteDefaults(),
		Clock:       ClockDefaults(),
		Degradation: degrade.DefaultOptions,
	}
}

// Load reads a YAML file over the defaults. Unknown keys and values of the
// wrong type are errors: the error joins one *Problem per mistake, each with
// the file and line. An empty file means all defaults.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Default(), err
	}
	cfg, _, err := parse(data)
	if err == nil {
		return cfg, nil
	}
	if !hasProblems(err) {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	for _, e := range problemsOf(err) {
		if p, ok := e.(*Problem); ok {
			p.File = path
		}
	}
	return cfg, err
}

// RedactedMarker replaces a secret's value in a redacted config.
const RedactedMarker = secret.Marker

// DefaultOfflineAlertAfter is cloud.offline_alert_after's default: a minute
// without a sink is longer than a cloud restart or a flaky link's usual
// gap, and short enough that an operator hears of an outage before the
// buffer does.
const DefaultOfflineAlertAfter = time.Minute

// Redacted returns a copy of c with every secret replaced by RedactedMarker:
// what the node publishes to the cloud's config registry. c is unchanged.
func Redacted(c Config) Config { return secret.Redact(c) }

// RedactedKeys returns the keys whose values hold RedactedMarker, sorted: the
// secrets to supply again in a config that came back from the registry.
func RedactedKeys(c Config) []string { return secret.Find(c) }

// ErrRedacted is wrapped by the problem Validate reports for each key that
// still holds RedactedMarker.
var ErrRedacted = errors.New("is redacted: supply the secret again")

// Validate returns every problem found, each naming its key. A key holding
// RedactedMarker is one: a config recovered from the registry does not run
// until its secrets are supplied again.
func (c Config) Validate() error {
	var errs []error
	for _, key := range RedactedKeys(c) {
		errs = append(errs, &Problem{Key: key, Err: ErrRedacted})
	}
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.NodeID == "" || strings.ContainsAny(c.NodeID, nodeIDForbidden) {
		bad("node_id", "%q must be non-empty and contain no spaces, dots, slashes, '*' or '>': set another with --node-id or node_id (e.g. %q)",
			c.NodeID, ValidNodeID(c.NodeID))
	}
	if c.DataDir == "" {
		bad("data_dir", "must be set")
	}
	if err := checkAddr(c.HTTP.Addr); err != nil {
		bad("http.addr", "%v", err)
	}
	if c.HTTP.MaxConcurrentPerSource < 1 {
		bad("http.max_concurrent_per_source", "%d must be at least 1", c.HTTP.MaxConcurrentPerSource)
	}
	if c.HTTP.MaxBodyBytes < 1024 {
		bad("http.max_body_bytes", "%d is below the minimum of 1KiB", c.HTTP.MaxBodyBytes)
	}
	switch c.MQTT.Mode {
	case "embedded":
		if err := checkAddr(c.MQTT.Addr); err != nil {
			bad("mqtt.addr", "%v", err)
		}
	case "external":
		u, err := url.Parse(c.MQTT.External.Broker)
		if err != nil || (u.Scheme != "tcp" && u.Scheme != "mqtt" && u.Scheme != "ssl" && u.Scheme != "tls") || u.Host == "" {
			bad("mqtt.external.broker", "%q must be a URL like tcp://broker.local:1883", secret.RedactURL(c.MQTT.External.Broker))
		}
		if c.MQTT.External.Topic == "" {
			bad("mqtt.external.topic", "must be set")
		}
	case "off":
	default:
		bad("mqtt.mode", "%q must be embedded, external or off", c.MQTT.Mode)
	}
	if c.MQTT.MaxConnectionsPerSource < 0 {
		bad("mqtt.max_connections_per_source", "%d must be 0 (no limit) or more", c.MQTT.MaxConnectionsPerSource)
	}
	if c.MQTT.MaxPayload < 64 || c.MQTT.MaxPayload > 256<<20 {
		bad("mqtt.max_payload", "%d must be between 64B and 256MiB", c.MQTT.MaxPayload)
	}
	if c.Ingest.MaxFuture < 0 {
		bad("ingest.max_future", "must not be negative")
	}
	if c.Ingest.DedupWindow < 0 {
		bad("ingest.dedup_window", "must not be negative")
	}
	if c.Ingest.DedupMaxEntries < 1 {
		bad("ingest.dedup_max_entries", "must be at least 1")
	}
	if !slices.Contains([]string{"content", "off"}, c.Ingest.DedupWithoutID) {
		bad("ingest.dedup_without_id", "%q must be content or off", c.Ingest.DedupWithoutID)
	}
	if !slices.Contains([]string{"log", "sqlite", "pebble"}, c.Buffer.Engine) {
		bad("buffer.engine", "%q must be log, sqlite or pebble", c.Buffer.Engine)
	}
	if c.Buffer.SegmentBytes < 4096 {
		bad("buffer.segment_bytes", "%d is below the minimum of 4KiB", c.Buffer.SegmentBytes)
	}
	if c.Buffer.MaxBytes < 2*c.Buffer.SegmentBytes {
		bad("buffer.max_bytes", "%d must be at least twice buffer.segment_bytes (%d)", c.Buffer.MaxBytes, c.Buffer.SegmentBytes)
	}
	if len(c.Windows.Sizes) == 0 {
		bad("windows.sizes", "at least one size is required")
	}
	seen := map[time.Duration]int{}
	for i, sz := range c.Windows.Sizes {
		if j, ok := seen[sz]; ok {
			bad(fmt.Sprintf("windows.sizes[%d]", i), "%s is already windows.sizes[%d]: list each size once", sz, j)
		}
		seen[sz] = i
		if sz < time.Second || sz%time.Millisecond != 0 {
			bad(fmt.Sprintf("windows.sizes[%d]", i), "%s must be at least 1s, in whole milliseconds", sz)
		}
	}
	if c.Windows.AllowedLateness < 0 {
		bad("windows.allowed_lateness", "must not be negative")
	}
	if !slices.Contains([]string{"auto", "all", "off"}, c.Windows.Split) {
		bad("windows.split", "must be auto, all or off, not %q", c.Windows.Split)
	}
	if c.Windows.IdleTimeout < time.Second {
		bad("windows.idle_timeout", "%s must be at least 1s", c.Windows.IdleTimeout)
	}
	if c.Windows.Accuracy <= 0 || c.Windows.Accuracy >= 0.5 {
		bad("windows.accuracy", "%g must be between 0 and 0.5", c.Windows.Accuracy)
	}
	if c.Windows.Workers < 0 {
		bad("windows.workers", "must not be negative")
	}
	if err := alert.ValidateRules(c.Alerts.Rules); err != nil {
		bad("alerts.rules", "%v", err)
	}
	for i, r := range c.Alerts.Rules {
		if r.WithDefaults().Source == alert.SourceWindow && r.Window > 0 && !slices.Contains(c.Windows.Sizes, r.Window) {
			bad(fmt.Sprintf("alerts.rules[%d].window", i), "%s is not in windows.sizes (%s): add it there or use one of those",
				r.Window, durations(c.Windows.Sizes))
		}
	}
	for i, w := range c.Alerts.Notify.Webhooks {
		if err := w.WithDefaults().Validate(); err != nil {
			bad(fmt.Sprintf("alerts.notify.webhooks[%d]", i), "%v", err)
		}
	}
	if p := c.Alerts.Notify.MQTTTopicPrefix; strings.ContainsAny(p, "+#") || p == "devices" || strings.HasPrefix(p, "devices/") {
		bad("alerts.notify.mqtt_topic_prefix", "%q must have no wildcards (+ #) and not be under devices/, where events are ingested", p)
	}
	if b := c.Alerts.Notify.Backup; b != nil {
		if err := b.WithDefaults().Validate(); err != nil {
			bad("alerts.notify.backup", "%v", err)
		} else if _, err := exec.LookPath(b.Path); err != nil {
			bad("alerts.notify.backup.path", "%q is not an executable file: give the full path of a program that exists (chmod +x it)", b.Path)
		}
	}
	if c.Cloud.URL != "" {
		u, err := url.Parse(c.Cloud.URL)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
			bad("cloud.url", "%q must be a URL like nats://cloud.example:4222", secret.RedactURL(c.Cloud.URL))
		}
	}
	c.Cloud.validateLinks(bad)
	if h := c.Cloud.HTTP; h != nil {
		if u, err := url.Parse(h.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("cloud.http.url", "%q must be an http or https URL", secret.RedactURL(h.URL))
		}
	}
	if m := c.Cloud.MQTT; m != nil {
		if u, err := url.Parse(m.Broker); err != nil || (u.Scheme != "tcp" && u.Scheme != "mqtt" && u.Scheme != "ssl" && u.Scheme != "tls") || u.Host == "" {
			bad("cloud.mqtt.broker", "%q must be a URL like tcp://broker.example:1883", secret.RedactURL(m.Broker))
		}
	}
	if err := c.Buffer.Pressure.Validate(); err != nil {
		bad("buffer.pressure", "%v", err)
	}
	if c.Checkpoints.Interval < time.Second {
		bad("checkpoints.interval", "%v is below the minimum of 1s", c.Checkpoints.Interval)
	}
	if c.Checkpoints.Keep < 1 {
		bad("checkpoints.keep", "%d must be at least 1", c.Checkpoints.Keep)
	}
	if c.Checkpoints.SnapshotInterval < time.Second {
		bad("checkpoints.snapshot_interval", "%v is below the minimum of 1s", c.Checkpoints.SnapshotInterval)
	}
	if c.Checkpoints.SnapshotKeep < 1 {
		bad("checkpoints.snapshot_keep", "%d must be at least 1", c.Checkpoints.SnapshotKeep)
	}
	for name, st := range c.Streams {
		if why := event.ValidName(name); why != "" {
			bad("streams", "stream name %q %s", name, why)
		}
		if st.Priority != "" && !slices.Contains(Priorities, st.Priority) {
			bad("streams."+name+".priority", "%q must be one of %s", st.Priority, strings.Join(Priorities, ", "))
		}
	}
	errs = append(errs, c.validateTLS()...)
	if c.Cloud.BatchRecords < 1 {
		bad("cloud.batch_records", "must be at least 1")
	}
	if c.Cloud.MaxDelay <= 0 {
		bad("cloud.max_delay", "must be positive")
	}
	if c.Cloud.OfflineAlertAfter <= 0 {
		bad("cloud.offline_alert_after", "must be positive, like 1m")
	}
	errs = append(errs, c.checkListeners()...)
	c.Security.validate(bad)
	c.HA.validate(c, bad)
	c.Site.validate(c, bad)
	c.Clock.validate(bad)
	c.validateDegradation(bad)
	c.Limits.validate(bad)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q must be text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

func (s Security) validate(bad func(key, format string, args ...any)) {
	path := func(key, p string) {
		if strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			bad(key, "%q must not contain control characters", p)
		}
	}
	path("security.devices", s.Devices)
	path("security.tokens", s.Tokens)
	path("security.tls.cert", s.TLS.Cert)
	path("security.tls.key", s.TLS.Key)
	path("security.tls.client_ca", s.TLS.ClientCA)
	if s.Devices != "" && s.Devices == s.Tokens {
		bad("security.tokens", "%q must not be the devices file", s.Tokens)
	}
	// The TLS files themselves are checked with the uplinks' (tls.go).
}

// checkListeners reports two listeners of this node on the same port.
func (c Config) checkListeners() []error {
	var errs []error
	type listener struct{ key, addr string }
	ls := []listener{{"http.addr", c.HTTP.Addr}}
	if c.MQTT.Mode == "embedded" {
		ls = append(ls, listener{"mqtt.addr", c.MQTT.Addr})
	}
	if c.HA.Enabled() {
		ls = append(ls, listener{"ha.listen", c.HA.Listen})
	}
	for i, a := range ls {
		for _, b := range ls[:i] {
			if sameListener(a.addr, b.addr) {
				errs = append(errs, &Problem{Key: a.key, Also: []string{b.key},
					Msg: fmt.Sprintf("%q is also %s: give each listener its own port", a.addr, b.key)})
			}
		}
	}
	return errs
}

// sameListener says whether two listen addresses would take the same port:
// the same port on the same host, or on a wildcard. Port 0 (any free port)
// never clashes.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { ip := net.ParseIP(h); return h == "" || ip != nil && ip.IsUnspecified() }
	return ha == hb || wild(ha) || wild(hb)
}

func durations(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}

// nodeIDForbidden are the characters a node id may not hold: it is a token
// of NATS subjects and MQTT topics.
const nodeIDForbidden = " ./*>"

// ValidNodeID returns id with each character a node id may not hold (space,
// dot, slash, '*', '>', control characters) replaced by a dash:
// edge01.example.com becomes edge01-example-com. The default node id is
// the host name made valid this way.
func ValidNodeID(id string) string {
	id = strings.Map(func(r rune) rune {
		if strings.ContainsRune(nodeIDForbidden, r) || r < 0x20 || r == 0x7f {
			return '-'
		}
		return r
	}, id)
	if id == "" {
		return "holdfast"
	}
	return id
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has a bad port", addr)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q has a bad host", addr)
	}
	return nil
}

// ByteSize is a size in bytes; YAML accepts an integer or a string with a unit
// (B, KiB, MiB, GiB, TiB; KB, MB, GB, TB as powers of 1000).
type ByteSize int64

// UnmarshalYAML parses a ByteSize.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// ParseByteSize parses "1048576", "64KiB", "16MiB", "1GiB", "500MB".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 65536, 64KiB, 16MiB, 1GiB)", s)
	}
	return ByteSize(n * mult), nil
}

// Marshal writes c as YAML that Load reads back to c. Marshal(Redacted(c)) is
// what the node publishes to the cloud's config registry, and what `holdfast
// recover` writes.
func Marshal(c Config) ([]byte, error) { return yaml.Marshal(c) }

// Parse reads YAML over the defaults, like Load, from bytes.
func Parse(data []byte) (Config, error) {
	cfg, _, err := parse(data)
	return cfg, err
}
