package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/aggregator"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/node"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
)

func aggregateCmd() *cobra.Command {
	var (
		file, dataDir, listen, httpAddr, cloudURL, logLevel string
		insecure                                            bool
	)
	c := &cobra.Command{
		Use:   "aggregate",
		Short: "Run a site aggregator: nodes sync to it, it merges their windows and forwards to the cloud",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg := config.Default()
			if file != "" {
				var err error
				if cfg, err = config.Load(file); err != nil {
					return err
				}
			}
			if c.Flags().Changed("cloud-url") {
				cfg.Cloud.URL = cloudURL
			}
			if c.Flags().Changed("log-level") {
				cfg.Log.Level = logLevel
			}
			if insecure {
				cfg.Security.Insecure = true
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			logger := newLogger(cfg.Log, os.Stderr)
			secret, err := cfg.Site.SecretValue()
			if err != nil {
				return err
			}
			o := aggregator.Options{
				DataDir: dataDir, Listen: listen, HTTPAddr: httpAddr, CloudURL: cfg.Cloud.URL,
				CloudAccess: node.CloudAccess(cfg.Cloud), Secret: secret, Insecure: cfg.Security.Insecure, Logger: logger,
			}
			if t := cfg.Site.TLS; t.Cert != "" {
				r, err := tlsconf.Load(t.Cert, t.Key, "")
				if err != nil {
					return fmt.Errorf("site.tls: %w", err)
				}
				o.TLS = r.ServerConfig()
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			a, err := aggregator.Start(o)
			if err != nil {
				return err
			}
			return serveUntilDone(ctx, logger, a)
		},
	}
	f := c.Flags()
	f.StringVar(&dataDir, "data-dir", "./holdfast-aggregator", "directory for JetStream's files and the forwarding state")
	f.StringVar(&listen, "listen", "127.0.0.1:4223", "NATS address the nodes sync to (their --aggregator nats://HOST:PORT)")
	f.StringVar(&httpAddr, "http-addr", "127.0.0.1:8090", "HTTP address: /v1/windows (site-wide), /v1/status, /, /healthz, /metrics")
	f.StringVar(&cloudURL, "cloud-url", "", "cloud to forward to, e.g. nats://cloud.example:4222 (cloud.url; default: none, aggregate only)")
	f.StringVar(&file, "config", "", "YAML config file: its cloud: (url, credentials, TLS), site: (secret, tls) and log: sections")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (log.level; default info)")
	f.BoolVar(&insecure, "insecure", false, "accept listening beyond this host without a site secret (security.insecure); logs a warning")
	return c
}
