package config

import (
	"fmt"
	"net/url"

	"github.com/holdfast-edge/holdfast/internal/secret"
)

// CloudLink is one way to the cloud's NATS servers (cloud.links). Every link
// must reach the same JetStream streams: servers of one cluster, or two
// network paths (a wired uplink, a cellular modem) to one server.
type CloudLink struct {
	// URL of a NATS server of the cloud, e.g. nats://cloud.example:4222 or
	// tls://cloud-lte.example:4222.
	URL string `yaml:"url" secret:"url"`
	// Metered links (cellular backup) carry only the critical lane, window
	// results and alerts; everything else waits in the buffer until a more
	// preferred, unmetered link is back, then follows, each record once.
	Metered bool `yaml:"metered"`
	// Credentials and TLS files as cloud.user … cloud.key. A link that sets
	// none of user, password, token and creds takes cloud's credentials; one
	// that sets none of ca, cert and key takes cloud's TLS files.
	User     string `yaml:"user,omitempty"`
	Password string `yaml:"password,omitempty" secret:"true"`
	Token    string `yaml:"token,omitempty" secret:"true"`
	Creds    string `yaml:"creds,omitempty"`
	CA       string `yaml:"ca,omitempty"`
	Cert     string `yaml:"cert,omitempty"`
	Key      string `yaml:"key,omitempty"`
}

// SinkLinks are the cloud sink's links in order of preference: cloud.links,
// each with cloud's credentials and TLS files where it sets none of its own,
// or else cloud.url alone; none when neither is set.
func (c Cloud) SinkLinks() []CloudLink {
	if len(c.Links) == 0 {
		if c.URL == "" {
			return nil
		}
		return []CloudLink{{URL: c.URL, User: c.User, Password: c.Password, Token: c.Token, Creds: c.Creds,
			CA: c.CA, Cert: c.Cert, Key: c.Key}}
	}
	out := make([]CloudLink, len(c.Links))
	for i, l := range c.Links {
		if l.User == "" && l.Password == "" && l.Token == "" && l.Creds == "" {
			l.User, l.Password, l.Token, l.Creds = c.User, c.Password, c.Token, c.Creds
		}
		if l.CA == "" && l.Cert == "" && l.Key == "" {
			l.CA, l.Cert, l.Key = c.CA, c.Cert, c.Key
		}
		out[i] = l
	}
	return out
}

// Synced reports whether the node syncs to a cloud (cloud.url or cloud.links).
func (c Cloud) Synced() bool { return c.URL != "" || len(c.Links) > 0 }

func (c Cloud) validateLinks(bad func(key, format string, args ...any)) {
	for i, l := range c.Links {
		u, err := url.Parse(l.URL)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
			bad(fmt.Sprintf("cloud.links[%d].url", i), "%q must be a URL like nats://cloud.example:4222", secret.RedactURL(l.URL))
		}
		if (l.Cert == "") != (l.Key == "") {
			bad(fmt.Sprintf("cloud.links[%d]", i), "cert and key go together: set both or neither")
		}
	}
	if len(c.Links) > 0 && c.Links[0].Metered {
		bad("cloud.links[0].metered", "the most preferred link must not be metered: list the unmetered links first")
	}
}
