// Command holdfast is the edge node binary: flags → config → node → run.
// spf13/cobra parses the command line.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/node"
)

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "holdfast:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "holdfast",
		Short:         "holdfast: the edge node that keeps a site's device data safe",
		Version:       versionLine(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(versionCmd(), runCmd(), statusCmd(), configCmd(), benchCmd(), cloudCmd(), aggregateCmd(), recoverCmd(), deviceCmd(), tokenCmd(), witnessCmd())
	return root
}

func runCmd() *cobra.Command { return runCmdWith(run) }

// runCmdWith is `holdfast run` handing its config to start.
func runCmdWith(start func(config.Config) error) *cobra.Command {
	var (
		file                                                            string
		insecure                                                        bool
		dataDir, nodeID, httpAddr, mqttAddr, engine, mqttMode, cloudURL string
		haListen, haReplication, logLevel, logFormat, aggregatorURL     string
		haPeers                                                         []string
		siteListen, assign, zone                                        string
		sitePeers                                                       []string
	)
	c := &cobra.Command{
		Use:   "run",
		Short: "Start an edge node (no config file needed)",
		RunE: func(c *cobra.Command, _ []string) error {
			cfg := config.Default()
			if file != "" {
				var err error
				if cfg, err = config.Load(file); err != nil {
					return err
				}
			}
			set := func(flag string, dst *string, v string) {
				if c.Flags().Changed(flag) {
					*dst = v
				}
			}
			set("data-dir", &cfg.DataDir, dataDir)
			set("node-id", &cfg.NodeID, nodeID)
			set("http-addr", &cfg.HTTP.Addr, httpAddr)
			set("mqtt-addr", &cfg.MQTT.Addr, mqttAddr)
			set("mqtt-mode", &cfg.MQTT.Mode, mqttMode)
			set("buffer-engine", &cfg.Buffer.Engine, engine)
			set("cloud-url", &cfg.Cloud.URL, cloudURL)
			set("ha-listen", &cfg.HA.Listen, haListen)
			set("ha-replication", &cfg.HA.Replication, haReplication)
			set("aggregator", &cfg.Site.Aggregator, aggregatorURL)
			set("log-level", &cfg.Log.Level, logLevel)
			set("log-format", &cfg.Log.Format, logFormat)
			if c.Flags().Changed("ha-peers") {
				cfg.HA.Peers = haPeers
			}
			set("site-listen", &cfg.Site.Listen, siteListen)
			set("assign", &cfg.Site.Assign, assign)
			set("zone", &cfg.Site.Zone, zone)
			if c.Flags().Changed("site-peers") {
				cfg.Site.Peers = sitePeers
			}
			if insecure {
				cfg.Security.Insecure = true
			}
			return start(cfg)
		},
	}
	f := c.Flags()
	f.StringVar(&file, "config", "", "YAML config file (see README); flags override it")
	f.StringVar(&dataDir, "data-dir", "", "data directory (default ./holdfast-data)")
	f.StringVar(&nodeID, "node-id", "", "node id (default: host name)")
	f.StringVar(&httpAddr, "http-addr", "", "HTTP listen address (default 127.0.0.1:8080)")
	f.StringVar(&mqttAddr, "mqtt-addr", "", "embedded MQTT broker address (default 127.0.0.1:1883)")
	f.StringVar(&mqttMode, "mqtt-mode", "", "MQTT ingest: embedded, external or off (default embedded)")
	f.StringVar(&engine, "buffer-engine", "", "buffer engine: log (default), sqlite or pebble")
	f.StringVar(&cloudURL, "cloud-url", "", "cloud ingest to sync to, e.g. nats://127.0.0.1:4222 (default: none)")
	f.StringVar(&haListen, "ha-listen", "", "HA pair: this member's link address (ha.listen); with it the node runs as one of a pair")
	f.StringSliceVar(&haPeers, "ha-peers", nil, "HA pair: the other node's and the witness's link addresses, ADDR,ADDR (ha.peers)")
	f.StringVar(&haReplication, "ha-replication", "", "HA pair: sync (ack after the standby's fsync too, the default) or async (ha.replication)")
	f.StringVar(&siteListen, "site-listen", "", "site: this node's gossip address (site.listen); with it the node is one of a site of several")
	f.StringSliceVar(&sitePeers, "site-peers", nil, "site: other members' gossip addresses, ADDR,... (site.peers); one that answers is enough")
	f.StringVar(&assign, "assign", "", "site: how devices are spread, sticky (default), geographic, load or semantic (site.assign)")
	f.StringVar(&zone, "zone", "", "site: this node's zone, for geographic assignment (site.zone)")
	f.StringVar(&aggregatorURL, "aggregator", "", "site aggregator to sync to first, nats://HOST:PORT (site.aggregator); cloud.url then only while it is down")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (log.level; default info)")
	f.StringVar(&logFormat, "log-format", "", "text or json (log.format; default text)")
	f.BoolVar(&insecure, "insecure", false, "accept listening beyond this host without authentication (security.insecure); logs a warning")
	return c
}

func run(cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	logger := newLogger(cfg.Log, os.Stderr)
	host, _ := os.Hostname()
	logNodeID(logger, host, cfg.NodeID)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.HA.ActivePassive() {
		p, err := node.StartPair(ctx, cfg, logger)
		if err != nil {
			return err
		}
		return serveUntilDone(ctx, logger, p)
	}
	n, err := node.Start(cfg, logger)
	if err != nil {
		return err
	}
	return serveUntilDone(ctx, logger, n)
}

// logNodeID says so when the node id is the host name made valid rather
// than the host name itself.
func logNodeID(logger *slog.Logger, host, nodeID string) {
	if host != nodeID && config.ValidNodeID(host) == nodeID {
		logger.Info("node id is the host name made valid; choose another with --node-id or node_id", "host", host, "node_id", nodeID)
	}
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serveUntilDone waits for ctx (SIGINT or SIGTERM), then closes what runs
// and logs the shutdown.
func serveUntilDone(ctx context.Context, logger *slog.Logger, running io.Closer) error {
	<-ctx.Done()
	logger.Info("shutting down")
	if err := running.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped cleanly")
	return nil
}
