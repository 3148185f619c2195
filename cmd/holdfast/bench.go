package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/bench"
)

func benchCmd() *cobra.Command {
	c := &cobra.Command{Use: "bench", Short: "Generate device load and measure the node"}
	c.AddCommand(benchIngestCmd())
	c.AddCommand(benchEnginesCmd())
	c.AddCommand(benchSiteCmd())
	c.AddCommand(benchFloodCmd())
	return c
}

func benchFloodCmd() *cobra.Command {
	var (
		o      bench.FloodOptions
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "flood",
		Short: "Start a node with limits.device_rate and measure normal devices' throughput and p99 ack latency without and with one device flooding",
		Long: `Starts a node of this binary on 127.0.0.1 with limits.device_rate set to
--device-rate, has --devices devices post NDJSON batches at --event-rate each
(one device per request) or, with --transport mqtt, publish QoS 1 messages
(one connection per device), and in alternate phases one more device flooding
at --factor times its limit, ignoring its refusals (429; MQTT 5 0x97; MQTT
3.1.1 holds its acks, so it is slowed). Reports the normal devices'
events/s and p50/p99 ack latency (from each batch's due time) without and with
the flood, and their ratio.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the holdfast binary to start the node: %w", err)
			}
			o.Binary, o.Notices = exe, os.Stderr
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.RunFlood(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteText(c.OutOrStdout())
		},
	}
	f := c.Flags()
	f.IntVar(&o.Devices, "devices", 200, "devices sending normally")
	f.Float64Var(&o.DeviceRate, "device-rate", 100, "limits.device_rate of the node, events/s per device")
	f.Float64Var(&o.EventRate, "event-rate", 0, "each normal device's events/s (default half the device rate)")
	f.Float64Var(&o.Factor, "factor", 20, "the flooding device's rate, times the device rate")
	f.IntVar(&o.Batch, "batch", 10, "events per request")
	f.DurationVar(&o.Phase, "phase", 10*time.Second, "length of each phase")
	f.IntVar(&o.Rounds, "rounds", 2, "pairs of phases, without then with the flood")
	f.StringVar(&o.Transport, "transport", "http", "how every device sends: http (NDJSON batches) or mqtt (QoS 1, one connection per device)")
	f.IntVar(&o.MQTTVersion, "mqtt-version", 3, "with --transport mqtt: 3 (3.1.1: the flood is slowed by held acks) or 5 (refused with PUBACK 0x97)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

func benchSiteCmd() *cobra.Command {
	var (
		o      bench.SiteOptions
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "site",
		Short: "Start sites of 1, 2, 3… nodes (and an aggregator) here, play devices against them by assignment, and report per-node and total throughput",
		Long: `For each size in --nodes, starts that many nodes of this binary on 127.0.0.1
as one site (gossip, --assign), and an aggregator they sync to unless
--aggregator=false; asks /v1/assign where each of --devices devices belongs
and has every device send NDJSON batches to its owner for --duration. It
reports each node's events/s and share of the load, the total, and the share
of devices the last node moved when it joined, with a chart of the totals.

All nodes share this machine's cores: the total shows what the assignment
spreads, not what N machines would take (there, each node's share times N).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find the holdfast binary to start nodes: %w", err)
			}
			o.Binary = exe
			o.Notices = os.Stderr
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.RunSite(ctx, o)
			if rep != nil && len(rep.Runs) > 0 {
				out := c.OutOrStdout()
				if asJSON {
					enc := json.NewEncoder(out)
					enc.SetIndent("", "  ")
					if werr := enc.Encode(rep); werr != nil {
						return werr
					}
				} else if werr := rep.WriteText(out); werr != nil {
					return werr
				}
			}
			return err
		},
	}
	f := c.Flags()
	f.IntSliceVar(&o.Nodes, "nodes", []int{1, 2, 3}, "site sizes to measure, e.g. 1,2,3")
	f.IntVar(&o.Devices, "devices", 300, "simulated devices")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "load per site size")
	f.IntVar(&o.Batch, "batch", 100, "devices per round, one event each, split into one request per owner")
	f.IntVar(&o.Connections, "connections", 8, "concurrent requests over the whole site")
	f.StringVar(&o.Assign, "assign", "sticky", "assignment strategy: sticky, geographic, load or semantic")
	f.BoolVar(&o.Aggregator, "aggregator", true, "run an aggregator the nodes sync to")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return c
}

func benchIngestCmd() *cobra.Command {
	var (
		o                          bench.Options
		asJSON, quiet, allowErrors bool
		token                      func() (string, error)
	)
	c := &cobra.Command{
		Use:   "ingest",
		Short: "Send events as many devices would, and report throughput, ack latency and node memory",
		Long: `Plays --devices simulated devices sending events over HTTP (NDJSON batches) or
MQTT (QoS 1, one connection per device) for --duration or --count events, at
--rate events/s or flat out, and reports events acknowledged, errors by kind,
throughput, ack latency percentiles, the node's memory, the generator's own
CPU per event and a throughput chart.

The MQTT load comes from the bench's own MQTT 3.1.1 client (a few µs of CPU
per message), so it can load any broker: --target host:port with
--http-target none reports only what the generator measured, and
--compare-broker host:port runs the same load against a second broker (a
Mosquitto, say) after the first and reports both and their ratio.
Over HTTP, --compare-jetstream sends the same batches to an embedded
JetStream that fsyncs every message (sync_interval always) and reports the
ratio: durable ingest of each event against storing the batch as one
opaque message.

Without --target it starts a node of its own (this binary's "run") on
127.0.0.1 with a temporary data directory, and stops it at the end.
It exits non-zero if any event was not acknowledged, unless --allow-errors.

A --target with security on: --token (or $HOLDFAST_TOKEN, or --token-file)
gives the API token that reads its /metrics. The simulated devices send no
device tokens, so load a node without security.devices (as the node bench
starts itself is).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var err error
			if o.Token, err = token(); err != nil {
				return err
			}
			if c.Flags().Changed("count") && !c.Flags().Changed("duration") {
				o.Duration = 0 // --count alone bounds the run
			}
			if o.Target == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find the holdfast binary to start a node: %w", err)
				}
				o.NodeBinary = exe
			}
			if !quiet {
				o.Notices = os.Stderr
				if isTerminal(os.Stderr) {
					o.Progress = os.Stderr
				}
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			rep, err := bench.Run(ctx, o)
			if rep != nil {
				out := c.OutOrStdout()
				if asJSON {
					enc := json.NewEncoder(out)
					enc.SetIndent("", "  ")
					if werr := enc.Encode(rep); werr != nil {
						return werr
					}
				} else if werr := rep.WriteText(out); werr != nil {
					return werr
				}
			}
			if err != nil {
				return err
			}
			if n := rep.ErrorCount(); n > 0 && !allowErrors {
				return fmt.Errorf("%d errors, see the report (--allow-errors to exit 0 anyway)", n)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.Transport, "transport", bench.TransportHTTP, "http or mqtt")
	f.IntVar(&o.Devices, "devices", bench.DefaultDevices, "simulated devices")
	f.Float64Var(&o.Rate, "rate", 0, "events/s over all devices (0: flat out)")
	f.DurationVar(&o.Duration, "duration", bench.DefaultDuration, "how long to send; with --count, whichever ends first")
	f.Int64Var(&o.Count, "count", 0, "total events to send (alone, without --duration, it bounds the run)")
	f.IntVar(&o.Batch, "batch", bench.DefaultBatch, "HTTP: events per request")
	f.IntVar(&o.Connections, "connections", bench.DefaultConnections, "HTTP: concurrent connections, each sending batches of several devices' events")
	f.IntVar(&o.Inflight, "inflight", bench.DefaultInflight, "MQTT: unacknowledged messages per device")
	f.StringVar(&o.Target, "target", "", "node to load, host:port: its HTTP address, or its MQTT broker's with --transport mqtt (default: start a node)")
	f.StringVar(&o.HTTPTarget, "http-target", "", "with --transport mqtt and --target: the node's HTTP host:port for /metrics (default: the target's host, port 8080); \"none\" for a broker that is not holdfast: report only what the generator measured")
	f.BoolVar(&o.CompareJetStream, "compare-jetstream", false, "with --transport http: after the run, the same batches, byte for byte, to an embedded JetStream (file storage, sync_interval always, each batch one message, one publish in flight per connection), and the throughput ratio of the two")
	f.StringVar(&o.CompareBroker, "compare-broker", "", "with --transport mqtt: after the run, the same load against this MQTT broker (host:port, e.g. a Mosquitto), and the throughput ratio of the two")
	f.StringArrayVar(&o.NodeArgs, "node-arg", nil, "extra argument for the started node's \"run\" (repeatable)")
	f.BoolVar(&o.KeepData, "keep-data", false, "keep the started node's data directory")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress bar or notices on stderr")
	f.BoolVar(&allowErrors, "allow-errors", false, "exit 0 even if some events were not acknowledged")
	token = tokenFlags(c)
	return c
}

// isTerminal reports whether f is a character device, as a terminal is.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
