package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Site configures this node's place in a site of several nodes. The site
// section has more keys coming (membership, assignment: --site-listen and
// friends); these are the site aggregator's (docs/format/aggregator.md) and
// the secret and TLS that every site link shares.
type Site struct {
	// Aggregator is the site aggregator's NATS URL (--aggregator),
	// nats://host:port of its --listen: the node syncs there first (sink
	// "aggregator") and straight to cloud.url only while it is offline.
	Aggregator string `yaml:"aggregator" secret:"url"`
	// Secret authenticates the site's links (the aggregator takes it as its
	// NATS token); SecretFile reads it from a file instead; with neither,
	// $HOLDFAST_SITE_SECRET.
	Secret     string `yaml:"secret,omitempty" secret:"true"`
	SecretFile string `yaml:"secret_file,omitempty"`
	// TLS of the site's links: Cert and Key the aggregator's listener
	// certificate (and a node's client certificate), CA what a node trusts
	// for the aggregator.
	TLS SiteTLS `yaml:"tls"`
}

// SiteTLS is the site links' TLS.
type SiteTLS struct {
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
	CA   string `yaml:"ca,omitempty"`
}

// SiteSecretEnv holds the site secret when neither site.secret nor
// site.secret_file is set.
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

func (s Site) validate(bad func(key, format string, args ...any)) {
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
}
