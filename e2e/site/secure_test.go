package site

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// tokenTransport adds an API token to every request.
type tokenTransport struct {
	token string
	base  http.RoundTripper
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return t.base.RoundTrip(r)
}

// holdfastCmd runs the binary and returns its stdout.
func holdfastCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, args...).Output()
	require.NoError(t, err, "holdfast %s", strings.Join(args, " "))
	return string(out)
}

// TestSiteSecured runs a site with security on every link: device tokens,
// API tokens, HTTPS and MQTT over TLS on the nodes, the gossip keyed by the
// site secret, forwarded events signed with it and sent over HTTPS, and the
// aggregator taking the secret as its token over TLS. An HTTPS device at the
// wrong node is redirected with its token, an MQTT 3.1.1 device over TLS is
// forwarded to its owner, everything reaches the aggregator and the cloud,
// and a node with another secret never joins.
func TestSiteSecured(t *testing.T) {
	if testing.Short() {
		t.Skip("site test skipped in -short mode")
	}
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "site CA")
	caFile := ca.WriteCA(t, dir, "ca.pem")
	cert, key := ca.Server(t, "site").Write(t, dir, "server")
	devices := filepath.Join(dir, "devices.yaml")
	tokens := filepath.Join(dir, "tokens.yaml")
	var devTokens []string
	for i := range 4 {
		devTokens = append(devTokens, strings.TrimSpace(holdfastCmd(t, "device", "add", fmt.Sprintf("sec%d", i), "--devices", devices)))
	}
	apiToken := strings.TrimSpace(holdfastCmd(t, "token", "add", "tests", "--role", "read", "--tokens", tokens))

	s := newSite(t, siteOptions{config: fmt.Sprintf(`  tls: {ca: %s}
security:
  devices: %s
  tokens: %s
  tls: {cert: %s, key: %s}
`, caFile, devices, tokens, cert, key)})
	// The aggregator: TLS on its NATS listener, the site secret as token.
	aggCfg := filepath.Join(dir, "aggregate.yaml")
	require.NoError(t, os.WriteFile(aggCfg, fmt.Appendf(nil, "site:\n  tls: {cert: %s, key: %s}\n", cert, key), 0o600))
	s.agg = &proc{name: "agg", dir: filepath.Join(dir, "agg"), http: freeAddr(t), nats: freeAddr(t)}
	s.agg.args = []string{"aggregate", "--config", aggCfg, "--data-dir", s.agg.dir, "--listen", s.agg.nats,
		"--http-addr", s.agg.http, "--cloud-url", s.cloud.URL()}
	s.agg.start(t)

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}
	api := &http.Client{Timeout: 5 * time.Second, Transport: tokenTransport{apiToken, tr}}
	secure := func(p *proc) { p.scheme, p.client = "https", api }
	n1 := s.addNodeWith(t, secure)
	n2 := s.addNodeWith(t, secure)
	s.converged(t, 30*time.Second)

	// A device owned by n2 posts to n1 over HTTPS with its token: 307, and
	// the client follows with the token to n2.
	var dev int
	for dev = 0; dev < 4; dev++ {
		if o, err := n1.owner(fmt.Sprintf("sec%d", dev), ""); err == nil && o == n2.name {
			break
		}
	}
	require.Less(t, dev, 4, "no device of the four belongs to n2")
	name := fmt.Sprintf("sec%d", dev)
	body := event(name+"-http", name, 1)
	req, err := http.NewRequest("POST", "https://"+n1.http+"/v1/events", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+devTokens[dev])
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, "%s", b)
	require.Equal(t, n2.http, resp.Request.URL.Host, "not redirected to the owner")

	// The same device over MQTT 3.1.1 and TLS at n1: its events are
	// forwarded to n2 over HTTPS, signed with the site secret.
	opts := mqtt.NewClientOptions().AddBroker("ssl://" + n1.mqtt).SetClientID(name).
		SetUsername(name).SetPassword(devTokens[dev]).SetTLSConfig(&tls.Config{RootCAs: ca.Pool()}).
		SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	for i := range 3 {
		pub := c.Publish("devices/"+name+"/temp", 1, false, event(fmt.Sprintf("%s-mqtt-%d", name, i), name, i))
		require.True(t, pub.WaitTimeout(10*time.Second))
		require.NoError(t, pub.Error())
	}
	c.Disconnect(100)
	count := func(p *proc) int { return len(p.eventsOf(t, name)) }
	require.Equal(t, 4, count(n2), "the owner holds the HTTPS event and the three forwarded ones")
	require.Zero(t, count(n1), "the node the device reached stored its events")

	// A forged forward is refused.
	fake, err := http.NewRequest("POST", "https://"+n2.http+"/v1/events?forwarded=n1",
		strings.NewReader(`{"device_id":"sec0","stream":"temp","ts":1700000000000,"value":1}`))
	require.NoError(t, err)
	fake.Header.Set("Holdfast-Site-Auth", strings.Repeat("0", 64))
	resp, err = (&http.Client{Transport: tr}).Do(fake)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	// Everything reaches the cloud through the aggregator, over TLS with
	// the secret as its token.
	s.caughtUp(t, 60*time.Second)
	for _, n := range s.nodes {
		st, err := n.status()
		require.NoError(t, err)
		for _, sk := range st.Sinks {
			if sk.Sink == "aggregator" {
				require.Equal(t, "connected", sk.State, "%s's aggregator sink", n.name)
			}
		}
	}
	byNode := map[string][]storedEvent{n1.name: n1.events(t), n2.name: n2.events(t)}
	s.requireCloudOnce(t, byNode, 60*time.Second)

	// A node with another secret cannot join: the gossip is keyed by it.
	intruder := s.addNodeWith(t, func(p *proc) {
		secure(p)
		p.env = []string{"HOLDFAST_SITE_SECRET=not-the-site-secret"}
	})
	time.Sleep(3 * failureDetection)
	for _, n := range []*proc{n1, n2} {
		ids, err := n.alive()
		require.NoError(t, err)
		require.NotContains(t, ids, intruder.name, "%s let a member with another secret in", n.name)
	}
	ids, err := intruder.alive()
	require.NoError(t, err)
	require.Equal(t, []string{intruder.name}, ids, "the intruder sees members it cannot share a key with")
}
