package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"strings"
	"time"
)

// Site makes this node one of a site of several edge nodes
// (docs/format/site.md): the members learn each other by gossip on
// Listen, each device belongs to one node by the Assign strategy, and a
// device at the wrong node is sent to its owner. Listen == "" runs no
// membership. Aggregator, independent of it, is the site aggregator the node
// syncs to (docs/format/aggregator.md).
type Site struct {
	// Aggregator is the site aggregator's NATS URL (--aggregator),
	// nats://host:port of its --listen: the node syncs there first (sink
	// "aggregator") and straight to cloud.url only while it is offline.
	Aggregator string `yaml:"aggregator" secret:"url"`
	// Listen is this node's gossip address (--site-listen, TCP and UDP),
	// Peers some other members' (--site-peers): one that answers is enough.
	Listen    string   `yaml:"listen"`
	Peers     []string `yaml:"peers,omitempty"`
	Advertise string   `yaml:"advertise"` // the gossip address others dial; default Listen
	// Assign is how devices are spread over the nodes (--assign): sticky
	// (consistent hashing, rendezvous style), geographic (the device's
	// zone), load (lighter nodes take more) or semantic (Rules).
	Assign string `yaml:"assign"`
	// Zone is this node's zone (--zone), for geographic assignment.
	Zone string `yaml:"zone"`
	// Zones give devices their zone when a request does not name one (a
	// `zone` parameter or tag): the first rule whose glob matches.
	Zones []SiteZone `yaml:"zones,omitempty"`
	// Rules are the semantic strategy's: devices and streams matching a
	// rule go to its nodes or its zone.
	Rules []SiteRule `yaml:"rules,omitempty"`
	// FailureDetection is how long a silent member takes to leave the
	// membership (its devices then go to the others).
	FailureDetection time.Duration `yaml:"failure_detection"`
	// AdvertiseHTTP and AdvertiseMQTT are where devices reach this node
	// (redirects name them); default the listen addresses, which must then
	// not be wildcards. AdvertiseHTTP is a URL or host:port.
	AdvertiseHTTP string `yaml:"advertise_http"`
	AdvertiseMQTT string `yaml:"advertise_mqtt"`
	// ForwardTimeout bounds forwarding an event to its owner (an MQTT 3.1.1
	// device, which cannot be redirected, or a batch naming several
	// owners); past it the node stores the event itself.
	ForwardTimeout time.Duration `yaml:"forward_timeout"`
	// Secret authenticates the members to each other: it keys the gossip's
	// encryption (AES-256-GCM), signs forwarded events and is the token of
	// the aggregator's listener. SecretFile reads it from a file instead;
	// with neither, $HOLDFAST_SITE_SECRET. Required unless every site
	// listener is on loopback or security.insecure is set.
	Secret     string `yaml:"secret,omitempty" secret:"true"`
	SecretFile string `yaml:"secret_file,omitempty"`
	// TLS of the site's links: CA verifies the other members' HTTPS
	// listeners (forwarded events) and the aggregator's; Cert and Key are
	// the aggregator's listener certificate (and a node's client
	// certificate towards it).
	TLS SiteTLS `yaml:"tls"`
}

// SiteTLS is the TLS of a site's member links.
type SiteTLS struct {
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
	CA   string `yaml:"ca,omitempty"`
}

// SiteSecretEnv holds the site secret when neither site.secret nor
// site.secret_file is set (`holdfast aggregate` reads it too).
const SiteSecretEnv = "HOLDFAST_SITE_SECRET"

// SecretValue returns the site secret: Secret, the content of SecretFile,
// or else $HOLDFAST_SITE_SECRET.
func (s Site) SecretValue() (string, error) {
	if s.SecretFile == "" {
		if s.Secret == "" {
			return os.Getenv(SiteSecretEnv), nil
		}
		return s.Secret, nil
	}
	b, err := os.ReadFile(s.SecretFile)
	if err != nil {
		return "", fmt.Errorf("site.secret_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// SiteZone gives the devices matching Devices (path.Match globs) the zone Zone.
type SiteZone struct {
	Devices []string `yaml:"devices"`
	Zone    string   `yaml:"zone"`
}

// SiteRule is one semantic assignment rule: events of devices matching
// Devices and streams matching Streams (globs; empty matches all) go to
// Nodes, or to the nodes of Zone.
type SiteRule struct {
	Devices []string `yaml:"devices,omitempty"`
	Streams []string `yaml:"streams,omitempty"`
	Nodes   []string `yaml:"nodes,omitempty"`
	Zone    string   `yaml:"zone,omitempty"`
}

// SiteDefaults are the defaults of the site section.
func SiteDefaults() Site {
	return Site{Assign: "sticky", FailureDetection: 5 * time.Second, ForwardTimeout: 5 * time.Second}
}

// Enabled says whether this node is a member of a site.
func (s Site) Enabled() bool { return s.Listen != "" }

// ZoneOf returns the zone the Zones rules give device, or "".
func (s Site) ZoneOf(device string) string {
	for _, z := range s.Zones {
		for _, g := range z.Devices {
			if ok, _ := path.Match(g, device); ok {
				return z.Zone
			}
		}
	}
	return ""
}

func (s Site) validate(c Config, bad func(key, format string, args ...any)) {
	if s.Aggregator != "" {
		u, err := url.Parse(s.Aggregator)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
			bad("site.aggregator", "%q must be a NATS URL like nats://aggregator.local:4222 (--aggregator)", s.Aggregator)
		}
	}
	if s.Secret != "" && s.SecretFile != "" {
		bad("site.secret_file", "set site.secret or site.secret_file, not both")
	}
	if (s.TLS.Cert == "") != (s.TLS.Key == "") {
		bad("site.tls", "cert and key go together")
	}
	if !s.Enabled() {
		if len(s.Peers) > 0 {
			bad("site.peers", "needs site.listen (--site-listen) too")
		}
		return
	}
	if err := checkAddr(s.Listen); err != nil {
		bad("site.listen", "%v", err)
	}
	if s.Advertise != "" {
		if err := checkAddr(s.Advertise); err != nil {
			bad("site.advertise", "%v", err)
		}
	}
	for i, p := range s.Peers {
		if err := checkAddr(p); err != nil {
			bad(fmt.Sprintf("site.peers[%d]", i), "%v", err)
		}
	}
	switch s.Assign {
	case "sticky", "geographic", "load", "semantic":
	default:
		bad("site.assign", "%q must be sticky, geographic, load or semantic", s.Assign)
	}
	if s.Assign == "semantic" && len(s.Rules) == 0 {
		bad("site.rules", "the semantic strategy needs at least one rule")
	}
	globs := func(key string, gs []string) {
		for j, g := range gs {
			if _, err := path.Match(g, ""); err != nil {
				bad(fmt.Sprintf("%s[%d]", key, j), "%q is not a valid glob: %v", g, err)
			}
		}
	}
	for i, r := range s.Rules {
		key := fmt.Sprintf("site.rules[%d]", i)
		globs(key+".devices", r.Devices)
		globs(key+".streams", r.Streams)
		if len(r.Nodes) == 0 && r.Zone == "" {
			bad(key, "names neither nodes nor a zone")
		}
	}
	for i, z := range s.Zones {
		key := fmt.Sprintf("site.zones[%d]", i)
		globs(key+".devices", z.Devices)
		if z.Zone == "" {
			bad(key+".zone", "must be set")
		}
	}
	if s.FailureDetection < 500*time.Millisecond {
		bad("site.failure_detection", "%v is below the minimum of 500ms", s.FailureDetection)
	}
	if s.ForwardTimeout <= 0 {
		bad("site.forward_timeout", "must be positive")
	}
	if c.HA.Enabled() {
		bad("site.listen", "a site member cannot also be one of an HA pair (ha.listen): run the pair's shapes or the site's, not both")
	}
	for _, a := range []struct{ key, adv, listen string }{
		{"site.advertise_http", s.AdvertiseHTTP, c.HTTP.Addr},
		{"site.advertise_mqtt", s.AdvertiseMQTT, c.MQTT.Addr},
	} {
		if a.adv != "" || a.listen == "" {
			continue
		}
		if isWildcard(a.listen) {
			bad(a.key, "must be set: the listen address %q is a wildcard, which a redirected device cannot use", a.listen)
		}
	}
}

// isWildcard says whether addr listens on every interface.
func isWildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}
