package node

import (
	"crypto/tls"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// loadTLS loads the listeners' certificates (security.tls); handleHUP reloads
// them on SIGHUP: new connections get the new files, connections up keep
// theirs. Without security.tls it does nothing.
func (n *Node) loadTLS() error {
	t := n.cfg.Security.TLS
	if t.Cert == "" {
		return nil
	}
	r, err := tlsconf.Load(t.Cert, t.Key, t.ClientCA)
	if err != nil {
		return fmt.Errorf("security.tls: %w", err)
	}
	n.tls = r
	n.tlsReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "holdfast_tls_reloads_total",
		Help: "Reloads of the listeners' TLS files (SIGHUP), by result: ok or failed (the old files stay in force).",
	}, []string{"result"})
	n.reg.MustRegister(n.tlsReloads, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "holdfast_tls_certificate_expiry_timestamp_seconds",
		Help: "When the listeners' certificate in force expires (Unix time).",
	}, func() float64 { return float64(r.Certificate().NotAfter.Unix()) }))
	n.log.Info("TLS on the listeners", "cert", t.Cert, "not_after", r.Certificate().NotAfter, "client_ca", t.ClientCA)
	return nil
}

// ReloadTLS reads the listeners' certificate, key and client CA files again
// (what SIGHUP does). On error the files in force stay in force.
func (n *Node) ReloadTLS() error {
	if n.tls == nil {
		return nil
	}
	if err := n.tls.Reload(); err != nil {
		n.tlsReloads.WithLabelValues("failed").Inc()
		n.log.Error("TLS files not reloaded; the old ones stay in force", "err", err)
		return err
	}
	n.tlsReloads.WithLabelValues("ok").Inc()
	n.log.Info("TLS files reloaded", "cert", n.cfg.Security.TLS.Cert, "not_after", n.tls.Certificate().NotAfter)
	return nil
}

// serverTLS is the listeners' TLS configuration, nil without security.tls.
func (n *Node) serverTLS() *tls.Config {
	if n.tls == nil {
		return nil
	}
	return n.tls.ServerConfig()
}

// CloudAccess is the credentials and TLS settings of cloud: for every
// connection to the cloud's NATS server (`holdfast recover` too).
func CloudAccess(c config.Cloud) cloud.Access {
	return cloud.Access{
		User: c.User, Password: c.Password, Token: c.Token, Creds: c.Creds,
		CA: c.CA, Cert: c.Cert, Key: c.Key,
	}
}

// CloudMain is the URL and access for the connections to the cloud other
// than sync (snapshots, the config registry, `holdfast recover`): cloud.url,
// else the first of cloud.links; "" when the node has no cloud.
func CloudMain(c config.Cloud) (string, cloud.Access) {
	if c.URL != "" || len(c.Links) == 0 {
		return c.URL, CloudAccess(c)
	}
	l := c.SinkLinks()[0]
	return l.URL, CloudAccess(config.Cloud{User: l.User, Password: l.Password, Token: l.Token, Creds: l.Creds,
		CA: l.CA, Cert: l.Cert, Key: l.Key})
}

// CloudLinks are the cloud sink's links (cloud.links, else cloud.url).
func CloudLinks(c config.Cloud) []uplink.Link {
	var out []uplink.Link
	for _, l := range c.SinkLinks() {
		out = append(out, uplink.Link{URL: l.URL, Metered: l.Metered, Access: CloudAccess(config.Cloud{
			User: l.User, Password: l.Password, Token: l.Token, Creds: l.Creds, CA: l.CA, Cert: l.Cert, Key: l.Key,
		})})
	}
	return out
}
