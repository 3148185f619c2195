package uplink

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"time"
)

// Prober is implemented by sinks that can tell, cheaply and without sending
// a record, whether their destination can be reached: a client's connection
// state, or a TCP dial. While a sink fails, the syncer probes it every
// SyncOptions.ProbeInterval; a probe that succeeds after one that failed
// (the link was down and is back) ends the retry wait at once and turns an
// open breaker half-open, so that sync resumes within a probe interval of
// the sink's return instead of after the backoff and the breaker's open
// timeout. A probe that always succeeds (the link is up but sends fail)
// changes nothing: the backoff and breaker then pace the retries.
type Prober interface {
	Probe(ctx context.Context) error
}

// Reconnecter is implemented by sinks whose client learns by itself when
// the destination is back (nats.go reconnects in the background): the
// syncer gives it a function to call then, which has the effect of a
// successful probe without waiting for the next one.
type Reconnecter interface {
	OnReconnect(func())
}

// DefaultProbeInterval is how often a failing sink is probed.
const DefaultProbeInterval = time.Second

// defaultPorts are the ports dialProbe dials for a URL that names none.
var defaultPorts = map[string]string{
	"http": "80", "https": "443", "ws": "80", "wss": "443",
	"nats": "4222", "tls": "4222",
	"tcp": "1883", "mqtt": "1883", "ssl": "8883", "mqtts": "8883",
}

// dialProbe dials the host of rawURL (the first of a comma-separated list)
// and closes the connection: the cheapest check that something listens
// there.
func dialProbe(ctx context.Context, rawURL string) error {
	first, _, _ := strings.Cut(rawURL, ",")
	u, err := url.Parse(strings.TrimSpace(first))
	if err != nil {
		return err
	}
	if u.Hostname() == "" {
		return errors.New("no host in the URL")
	}
	port := u.Port()
	if port == "" {
		if port = defaultPorts[u.Scheme]; port == "" {
			return errors.New("no port in the URL")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return err
	}
	return c.Close()
}
