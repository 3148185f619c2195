// Package aggregator is the site aggregator, `holdfast aggregate`
// (docs/format/aggregator.md): to the edge nodes of a site it is a cloud —
// an embedded JetStream with the cloud layout that their JetStream sinks
// sync to — and to the cloud it is those nodes: it forwards every record
// under its origin node's id with the cloud's own exactly-once protocol
// (uplink.JetStreamSink), so that a record a node sent straight to the cloud
// while the aggregator was down is stored once all the same. It merges the
// nodes' window results into exact site-wide windows (GET /v1/windows) and
// shows which nodes report to it (GET /v1/status, the status page).
//
// It promises: every record a node stored in the aggregator reaches the
// cloud once in effect, across restarts of the aggregator and fallbacks of
// the nodes; a site window is the merge of every node's result of it.
package aggregator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/secret"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// Options configure an aggregator.
type Options struct {
	// DataDir holds JetStream's files and the forwarding state. Required.
	DataDir string
	// Listen is the NATS client address nodes sync to (port 0: any free
	// port); HTTPAddr serves the status, windows and metrics.
	Listen, HTTPAddr string
	// CloudURL is the cloud to forward to; "" aggregates only. CloudAccess
	// are its credentials and TLS.
	CloudURL    string
	CloudAccess cloud.Access
	// Secret, if set, is the token every NATS client must present. TLS, if
	// set, makes the NATS listener TLS.
	Secret string
	TLS    *tls.Config
	// Insecure accepts a non-loopback listener without a secret.
	Insecure bool
	// Logger; default discard.
	Logger *slog.Logger
	// LostAfter is how long a node may be silent before it shows as lost;
	// default 3 s.
	LostAfter time.Duration

	// retry paces the forwarders after a failure; tests shorten it.
	retry uplink.RetryOptions
	// saveEvery bounds how long a forwarded message waits to be saved;
	// default 200 ms.
	saveEvery time.Duration
}

// ErrExposed is returned by Start for a listener beyond this host without a
// secret.
var ErrExposed = errors.New("aggregator: listening beyond this host without a site secret")

// Validate reports every problem with o.
func (o Options) Validate() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("data dir is required (--data-dir)"))
	}
	if o.Listen == "" {
		errs = append(errs, errors.New("listen address is required (--listen)"))
	}
	if o.HTTPAddr == "" {
		errs = append(errs, errors.New("http address is required (--http-addr)"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("aggregator: %w", err)
	}
	if o.Secret == "" && !o.Insecure {
		for _, a := range []struct{ flag, addr string }{{"--listen", o.Listen}, {"--http-addr", o.HTTPAddr}} {
			if !IsLoopback(a.addr) {
				return fmt.Errorf("%w: %s %s; set site.secret (or site.secret_file, or $HOLDFAST_SITE_SECRET) "+
					"in --config and give nodes the same, or accept the risk with --insecure", ErrExposed, a.flag, a.addr)
			}
		}
	}
	return nil
}

// IsLoopback reports whether a listen address reaches only this host.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Aggregator is a running site aggregator.
type Aggregator struct {
	o       Options
	log     *slog.Logger
	started time.Time
	srv     *cloud.Server
	nc      *nats.Conn // in-process: forwarders, windows, status reports
	js      jetstream.JetStream
	httpLn  net.Listener
	httpSrv *http.Server
	reg     *prometheus.Registry

	fwds    []*forwarder
	windows *siteWindows
	nodes   *nodeTable

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Start runs the aggregator: the embedded JetStream, the forwarders, the
// site windows and the HTTP server. It logs "aggregator ready" once all
// listen.
func Start(o Options) (*Aggregator, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LostAfter <= 0 {
		o.LostAfter = 3 * time.Second
	}
	if o.saveEvery <= 0 {
		o.saveEvery = 200 * time.Millisecond
	}
	if o.retry == (uplink.RetryOptions{}) {
		o.retry = uplink.DefaultRetryOptions
		o.retry.MaxInterval = 10 * time.Second
	}
	if o.Secret == "" && o.Insecure && (!IsLoopback(o.Listen) || !IsLoopback(o.HTTPAddr)) {
		o.Logger.Warn("INSECURE: the aggregator listens beyond this host without a site secret: anyone who reaches it may send and read the site's data",
			"listen", o.Listen, "http_addr", o.HTTPAddr, "fix", "site.secret")
	}
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(o.DataDir), Listen: o.Listen, Token: o.Secret, TLS: o.TLS, Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	a := &Aggregator{o: o, log: o.Logger, started: time.Now(), srv: srv, reg: prometheus.NewRegistry()}
	fail := func(err error) (*Aggregator, error) {
		a.Close()
		return nil, err
	}
	if a.nc, err = srv.Connect("holdfast-aggregator"); err != nil {
		return fail(fmt.Errorf("aggregator: connect in-process: %w", err))
	}
	if a.js, err = jetstream.New(a.nc); err != nil {
		return fail(err)
	}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(a.reg)
	a.nodes = newNodeTable(o.LostAfter)
	if _, err := a.nc.Subscribe(StatusSubjectPrefix+"*", a.nodes.receive); err != nil {
		return fail(err)
	}
	m.nodesLive(a.nodes.live)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if o.CloudURL == "" {
		a.log.Info("no cloud URL (--cloud-url or cloud.url): aggregating only, nothing is forwarded")
	}
	for _, st := range []string{cloud.StreamEvents, cloud.StreamResults, cloud.StreamLedger} {
		f, err := newForwarder(a, st, m)
		if err != nil {
			return fail(err)
		}
		a.fwds = append(a.fwds, f)
		m.lag(st, f.lag)
		if o.CloudURL != "" {
			a.wg.Go(func() { f.run(ctx) })
		}
	}
	a.windows = newSiteWindows(a.js, a.log)
	if err := a.windows.load(ctx); err != nil {
		return fail(err)
	}
	a.wg.Go(func() { a.windows.follow(ctx) })
	if a.httpLn, err = net.Listen("tcp", o.HTTPAddr); err != nil {
		return fail(fmt.Errorf("aggregator: listen on --http-addr: %w", err))
	}
	a.httpSrv = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	a.wg.Go(func() { _ = a.httpSrv.Serve(a.httpLn) })
	a.log.Info("aggregator ready", "nats_url", a.NATSURL(), "http_addr", a.HTTPAddr(), "data_dir", o.DataDir,
		"cloud_url", secret.RedactURL(o.CloudURL))
	return a, nil
}

// NATSURL is the URL nodes sync to (site.aggregator), with the actual port.
func (a *Aggregator) NATSURL() string { return a.srv.URL() }

// HTTPAddr is the HTTP listener's address, with the actual port.
func (a *Aggregator) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// Close stops forwarding, saves the forwarding state, stops serving and
// shuts the embedded server down. It is safe to call more than once.
func (a *Aggregator) Close() error {
	var errs []error
	a.once.Do(func() {
		if a.cancel != nil {
			a.cancel()
		}
		if a.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, a.httpSrv.Shutdown(ctx))
			cancel()
		}
		a.wg.Wait()
		for _, f := range a.fwds {
			f.close()
		}
		if a.nc != nil {
			a.nc.Close()
		}
		errs = append(errs, a.srv.Close())
	})
	return errors.Join(errs...)
}
