package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTLSKeysLoadAndValidate(t *testing.T) {
	dir := t.TempDir()
	f := func(name string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("pem"), 0o600))
		return p
	}
	crt, key, ca, creds := f("a.crt"), f("a.key"), f("ca.pem"), f("node.creds")
	cfg, err := Parse([]byte(strings.NewReplacer("CRT", crt, "KEY", key, "CA", ca, "CREDS", creds).Replace(`
security:
  tls: {cert: CRT, key: KEY, client_ca: CA}
cloud:
  url: tls://cloud.example:4222
  creds: CREDS
  ca: CA
  cert: CRT
  key: KEY
  http: {url: https://ingest.example, ca: CA, cert: CRT, key: KEY}
  mqtt: {broker: ssl://broker.example:8883, username: u, password: p, ca: CA, cert: CRT, key: KEY}
mqtt:
  mode: external
  external: {broker: ssl://site:8883, ca: CA, cert: CRT, key: KEY}
`)))
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, TLS{Cert: crt, Key: key, ClientCA: ca}, cfg.Security.TLS)
	require.Equal(t, creds, cfg.Cloud.Creds)
	require.Equal(t, ca, cfg.Cloud.MQTT.CA)
	require.Equal(t, key, cfg.MQTT.External.Key)

	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"cert without key", func(c *Config) { c.Security.TLS.Key = "" }, "security.tls.cert: cert and key must be set together"},
		{"missing file", func(c *Config) { c.Security.TLS.Cert = filepath.Join(dir, "nope") }, "security.tls.cert: open"},
		{"client CA without TLS", func(c *Config) { c.Security.TLS = TLS{ClientCA: ca} }, "security.tls.client_ca: needs"},
		{"token and creds", func(c *Config) { c.Cloud.Token = "t" }, "cloud.token: set either"},
		{"user and creds", func(c *Config) { c.Cloud.User = "u" }, "cloud.user: set either"},
		{"missing creds", func(c *Config) { c.Cloud.Creds = filepath.Join(dir, "nope") }, "cloud.creds: open"},
		{"http sink CA on http", func(c *Config) { c.Cloud.HTTP.URL = "http://ingest.example" }, "cloud.http.ca: TLS settings need an https URL"},
		{"bridge CA on tcp", func(c *Config) { c.Cloud.MQTT.Broker = "tcp://b:1883" }, "cloud.mqtt.ca: TLS settings need an ssl://"},
		{"subscriber key without cert", func(c *Config) { c.MQTT.External.Cert = "" }, "mqtt.external.cert: cert and key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			h, m := *cfg.Cloud.HTTP, *cfg.Cloud.MQTT
			c.Cloud.HTTP, c.Cloud.MQTT = &h, &m
			tc.edit(&c)
			err := c.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}
