package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
)

func cloudCmd() *cobra.Command {
	var dataDir, listen string
	c := &cobra.Command{
		Use:   "cloud",
		Short: "Run a local cloud ingest: an embedded NATS JetStream with the holdfast layout",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			logger := newLogger(config.Default().Log, os.Stderr)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := cloud.Start(cloud.Options{DataDir: dataDir, Listen: listen, Logger: logger})
			if err != nil {
				return err
			}
			logger.Info("cloud ready", "url", s.URL(), "data_dir", dataDir)
			return serveUntilDone(ctx, logger, s)
		},
	}
	f := c.Flags()
	f.StringVar(&dataDir, "data-dir", "./holdfast-cloud", "directory for JetStream's files")
	f.StringVar(&listen, "listen", cloud.DefaultListen, "client listen address (port 0: any free port)")
	return c
}
