package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/hacluster"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
)

// secretEnv holds the member secret when no --secret-file is given.
const secretEnv = config.SecretEnv

// witnessFlags are the flags of `holdfast witness`.
type witnessFlags struct {
	name, listen, advertise, dataDir, secretFile string
	peers                                        []string
	tlsCert, tlsKey, tlsCA                       string
	insecure                                     bool
}

func witnessCmd() *cobra.Command {
	var w witnessFlags
	c := &cobra.Command{
		Use:   "witness",
		Short: "Run the third member of an HA pair: it breaks ties and never becomes primary",
		Long: "Run the witness of an active-passive pair: a member of the pair's cluster that holds a\n" +
			"replica of the leader record, so that of the two nodes only one that can reach a\n" +
			"majority is primary. The member secret is read from --secret-file or " + secretEnv + ".",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			o, err := w.options()
			if err != nil {
				return err
			}
			return runWitness(o, w.insecure)
		},
	}
	f := c.Flags()
	f.StringVar(&w.listen, "ha-listen", "", "route listen address, host:port (required)")
	f.StringSliceVar(&w.peers, "ha-peers", nil, "the two nodes' route addresses, host:port,host:port (required)")
	f.StringVar(&w.advertise, "advertise", "", "route address the other members may learn from one another (default: --ha-listen)")
	f.StringVar(&w.dataDir, "data-dir", "./holdfast-witness", "directory for the witness's replica of the cluster's data")
	f.StringVar(&w.name, "name", "witness", "member name: unique in the pair, the same across restarts")
	f.StringVar(&w.secretFile, "secret-file", "", "file holding the member secret (default: $"+secretEnv+")")
	f.StringVar(&w.tlsCert, "tls-cert", "", "route TLS: certificate (PEM), for both server and client use")
	f.StringVar(&w.tlsKey, "tls-key", "", "route TLS: key (PEM)")
	f.StringVar(&w.tlsCA, "tls-ca", "", "route TLS: CA the other members' certificates must chain to")
	f.BoolVar(&w.insecure, "insecure", false, "accept routes from anyone when listening beyond this host with no secret; logs a warning")
	return c
}

// options turns the flags into the member's options, reading the secret and
// the TLS files.
func (w witnessFlags) options() (hacluster.Options, error) {
	o := hacluster.Options{Name: w.name, Listen: w.listen, Advertise: w.advertise, Peers: w.peers, DataDir: w.dataDir}
	if w.listen == "" || len(w.peers) == 0 {
		return o, errors.New("witness: --ha-listen and --ha-peers are required")
	}
	if w.secretFile != "" {
		b, err := os.ReadFile(w.secretFile)
		if err != nil {
			return o, fmt.Errorf("witness: secret: %w", err)
		}
		if o.Secret = strings.TrimSpace(string(b)); o.Secret == "" {
			return o, fmt.Errorf("witness: secret file %s is empty", w.secretFile)
		}
	} else {
		o.Secret = os.Getenv(secretEnv)
	}
	if w.tlsCert != "" || w.tlsKey != "" || w.tlsCA != "" {
		if w.tlsCert == "" || w.tlsKey == "" || w.tlsCA == "" {
			return o, errors.New("witness: route TLS needs --tls-cert, --tls-key and --tls-ca")
		}
		cert, err := tls.LoadX509KeyPair(w.tlsCert, w.tlsKey)
		if err != nil {
			return o, fmt.Errorf("witness: route TLS: %w", err)
		}
		pool, err := tlsconf.LoadPool(w.tlsCA)
		if err != nil {
			return o, fmt.Errorf("witness: route TLS: %w", err)
		}
		o.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return o, o.Validate()
}

// checkWitnessExposure refuses routes open to anyone unless insecure.
func checkWitnessExposure(o hacluster.Options, insecure bool) (warn bool, err error) {
	if !o.Unauthenticated() {
		return false, nil
	}
	if insecure {
		return true, nil
	}
	return false, fmt.Errorf("witness: --ha-listen %s reaches beyond this host and no member secret is set, "+
		"so anyone could join the pair; give the pair's secret with --secret-file or %s, "+
		"or accept the risk with --insecure", o.Listen, secretEnv)
}

func runWitness(o hacluster.Options, insecure bool) error {
	logger := newLogger(config.Default().Log, os.Stderr)
	warn, err := checkWitnessExposure(o, insecure)
	if err != nil {
		return err
	}
	if warn {
		logger.Warn("INSECURE: routes accept anyone who can reach them: a stranger may join the pair",
			"ha_listen", o.Listen, "fix", "--secret-file or "+secretEnv)
	}
	o.Logger = logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m, err := hacluster.Start(o)
	if err != nil {
		return err
	}
	defer m.Close()
	logger.Info("witness started: waiting for the pair's bucket", "name", o.Name, "ha_listen", m.ClusterAddr(), "ha_peers", o.Peers)
	if _, err := m.KV(ctx); err != nil {
		if ctx.Err() != nil {
			logger.Info("stopped before the pair's bucket was ready")
			return nil
		}
		return err
	}
	logger.Info("witness ready", "name", o.Name, "ha_listen", m.ClusterAddr())
	<-ctx.Done()
	logger.Info("shutting down")
	m.Close()
	logger.Info("stopped cleanly")
	return nil
}
