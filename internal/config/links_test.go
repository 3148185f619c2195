package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCloudLinks(t *testing.T) {
	path := write(t, `node_id: n1
cloud:
  user: edge
  password: s3cret
  links:
    - url: nats://wired.example:4222
    - url: tls://lte.example:4222
      metered: true
      token: lte-token
      ca: /etc/holdfast/lte-ca.pem
`)
	cfg, err := Check(path)
	require.NoError(t, err)
	require.True(t, cfg.Cloud.Synced())
	require.Equal(t, []CloudLink{
		{URL: "nats://wired.example:4222", User: "edge", Password: "s3cret"},
		{URL: "tls://lte.example:4222", Metered: true, Token: "lte-token", CA: "/etc/holdfast/lte-ca.pem"},
	}, cfg.Cloud.SinkLinks())
	red := Redacted(cfg)
	require.Equal(t, RedactedMarker, red.Cloud.Links[1].Token)

	// cloud.url alone is one link.
	one := Cloud{URL: "nats://c:4222", Token: "t"}
	require.Equal(t, []CloudLink{{URL: "nats://c:4222", Token: "t"}}, one.SinkLinks())

	path = write(t, `node_id: n1
cloud:
  links:
    - url: nats://lte.example:4222
      metered: true
    - url: http://wired.example
`)
	_, err = Check(path)
	got := problems(t, err)
	require.Len(t, got, 2)
	require.Contains(t, got[0], `cloud.links[1].url: "http://wired.example" must be a URL like nats://cloud.example:4222`)
	require.Contains(t, got[1], "cloud.links[0].metered: the most preferred link must not be metered")
}
