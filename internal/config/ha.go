package config

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// HA configures an active-passive pair: two nodes and a witness
// (`holdfast witness`) form a quorum on their member link, an embedded
// clustered NATS server (docs/format/ha.md); one node is primary and takes
// writes, the other replicates its log (docs/format/replication.md). Both
// nodes of a pair carry the same node_id: the standby's buffer is an
// offset-for-offset copy of the primary's, so the cloud's record identity
// (node_id, offset) holds across a takeover. Listen == "" runs no pair.
type HA struct {
	// Mode is active-passive (the default: a primary, a standby, a
	// witness) or active-active: both nodes take devices, each with its own
	// log and node id, and exchange window partials so that either answers
	// /v1/windows for both; no witness, Peers is the other node alone.
	Mode string `yaml:"mode"`
	// Listen is this member's link address (--ha-listen), Peers the other
	// two members' (--ha-peers).
	Listen string   `yaml:"listen"`
	Peers  []string `yaml:"peers,omitempty"`
	// Advertise is the link address the other members may learn from one
	// another and dial besides Peers (the member link gossips it); default
	// Listen. Set it when Listen is a wildcard.
	Advertise string `yaml:"advertise"`
	// Member names this node in the pair; default: node_id, the host name
	// and the link port ("node-host-7301"). Stable across restarts.
	Member string `yaml:"member"`
	// Replication is sync (an ack waits for the standby's fsync too: RPO 0)
	// or async (acks do not wait; the lag is shown and alerted on).
	Replication string `yaml:"replication"`
	// Secret authenticates the members to each other (every member of the
	// pair and the witness hold the same one); SecretFile reads it from a
	// file instead; with neither, $HOLDFAST_HA_SECRET. Required unless the
	// link listens on loopback only or security.insecure is set.
	Secret     string `yaml:"secret,omitempty" secret:"true"`
	SecretFile string `yaml:"secret_file,omitempty"`
	// TLS on the member link: Cert and Key this member's certificate, CA the
	// CA every member's certificate is checked against (both ways).
	TLS HATLS `yaml:"tls"`
	// The seed's failover procedure: a heartbeat every Heartbeat, Failures
	// missed in a row, TakeoverDelay, a second check, then a new term. Lease
	// is how long a primary keeps acknowledging after its last renewal;
	// it must be below Heartbeat×Failures+TakeoverDelay.
	Heartbeat     time.Duration `yaml:"heartbeat"`
	Failures      int           `yaml:"failures"`
	TakeoverDelay time.Duration `yaml:"takeover_delay"`
	Lease         time.Duration `yaml:"lease"`
	// SyncTimeout is how long a primary waits for a silent standby before it
	// goes on alone (sync mode then acks without it, with an alert; the
	// standby can no longer take over until it has caught up again).
	SyncTimeout time.Duration `yaml:"sync_timeout"`
	// MaxLag bounds the replication lag in async mode, in records: an ack
	// waits while the standby is further behind (so a takeover loses at
	// most that many); beyond it the alert ha-replication-lag fires. 0: no
	// bound, no alert.
	MaxLag uint64 `yaml:"max_lag"`
	// AdvertiseHTTP and AdvertiseMQTT are where devices reach this node when
	// it is primary (the standby's redirects); default: the listen
	// addresses, which must then not be wildcard.
	AdvertiseHTTP string `yaml:"advertise_http"`
	AdvertiseMQTT string `yaml:"advertise_mqtt"`
	// PromoteCommand runs (through /bin/sh -c) when this node takes over,
	// with HOLDFAST_HA_TERM, HOLDFAST_HA_MEMBER and HOLDFAST_HA_HTTP set:
	// move a virtual IP, update DNS.
	PromoteCommand string `yaml:"promote_command"`
}

// HATLS is the member link's TLS.
type HATLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

// HADefaults are the seed's numbers.
func HADefaults() HA {
	return HA{
		Mode:          "active-passive",
		Replication:   "sync",
		Heartbeat:     time.Second,
		Failures:      3,
		TakeoverDelay: 5 * time.Second,
		Lease:         3 * time.Second,
		SyncTimeout:   5 * time.Second,
		MaxLag:        100_000,
	}
}

// Enabled says whether this node runs in a pair.
func (h HA) Enabled() bool { return h.Listen != "" }

// ActivePassive says whether this node runs in an active-passive pair.
func (h HA) ActivePassive() bool { return h.Enabled() && h.Mode != "active-active" }

// ActiveActive says whether this node runs in an active-active pair.
func (h HA) ActiveActive() bool { return h.Enabled() && h.Mode == "active-active" }

// MemberName returns Member or the default derived from the node id, the
// host name and the link port.
func (h HA) MemberName(nodeID string) string {
	if h.Member != "" {
		return h.Member
	}
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(h.Listen)
	return ValidNodeID(nodeID + "-" + host + "-" + port)
}

// SecretEnv holds the member secret when neither ha.secret nor
// ha.secret_file is set (the witness reads it too).
const SecretEnv = "HOLDFAST_HA_SECRET"

// SecretValue returns the member secret: Secret, the content of SecretFile,
// or else $HOLDFAST_HA_SECRET.
func (h HA) SecretValue() (string, error) {
	if h.SecretFile == "" {
		if h.Secret == "" {
			return os.Getenv(SecretEnv), nil
		}
		return h.Secret, nil
	}
	b, err := os.ReadFile(h.SecretFile)
	if err != nil {
		return "", fmt.Errorf("ha.secret_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (h HA) validate(c Config, bad func(key, format string, args ...any)) {
	if !h.Enabled() {
		if len(h.Peers) > 0 {
			bad("ha.peers", "needs ha.listen (--ha-listen) too")
		}
		return
	}
	if err := checkAddr(h.Listen); err != nil {
		bad("ha.listen", "%v", err)
	}
	switch h.Mode {
	case "active-passive":
		if len(h.Peers) != 2 {
			bad("ha.peers", "%d addresses: an active-passive pair has exactly two other members, the other node and the witness (--ha-peers ADDR,ADDR)", len(h.Peers))
		}
	case "active-active":
		if len(h.Peers) != 1 {
			bad("ha.peers", "%d addresses: an active-active pair has one other member, the other node (--ha-peers ADDR)", len(h.Peers))
		}
	default:
		bad("ha.mode", "%q must be active-passive or active-active", h.Mode)
	}
	if h.Advertise != "" {
		if err := checkAddr(h.Advertise); err != nil {
			bad("ha.advertise", "%v", err)
		}
	}
	for i, p := range h.Peers {
		if err := checkAddr(p); err != nil {
			bad(fmt.Sprintf("ha.peers[%d]", i), "%v", err)
		}
	}
	if h.Replication != "sync" && h.Replication != "async" {
		bad("ha.replication", "%q must be sync or async", h.Replication)
	}
	if h.Secret != "" && h.SecretFile != "" {
		bad("ha.secret_file", "set ha.secret or ha.secret_file, not both")
	}
	if (h.TLS.Cert == "") != (h.TLS.Key == "") {
		bad("ha.tls", "cert and key go together")
	}
	if h.TLS.Cert != "" && h.TLS.CA == "" {
		bad("ha.tls.ca", "must be set with ha.tls.cert: members verify each other's certificates")
	}
	if h.Heartbeat < 10*time.Millisecond {
		bad("ha.heartbeat", "%v is below the minimum of 10ms", h.Heartbeat)
	}
	if h.Failures < 1 {
		bad("ha.failures", "%d must be at least 1", h.Failures)
	}
	if h.TakeoverDelay < 0 {
		bad("ha.takeover_delay", "must not be negative")
	}
	if h.Lease <= 0 || h.Lease >= time.Duration(h.Failures)*h.Heartbeat+h.TakeoverDelay {
		bad("ha.lease", "%v must be positive and below ha.heartbeat×ha.failures+ha.takeover_delay (%v), or two nodes could both acknowledge",
			h.Lease, time.Duration(h.Failures)*h.Heartbeat+h.TakeoverDelay)
	}
	if h.SyncTimeout <= 0 {
		bad("ha.sync_timeout", "must be positive")
	}
	for _, a := range []struct{ key, adv, listen string }{
		{"ha.advertise_http", h.AdvertiseHTTP, c.HTTP.Addr},
		{"ha.advertise_mqtt", h.AdvertiseMQTT, c.MQTT.Addr},
	} {
		if a.adv != "" {
			continue
		}
		if host, _, err := net.SplitHostPort(a.listen); err == nil && (host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()) {
			bad(a.key, "must be set: the listen address %q is a wildcard, which a redirected device cannot use", a.listen)
		}
	}
}
