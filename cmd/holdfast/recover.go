package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/node"
	"github.com/holdfast-edge/holdfast/internal/recovery"
)

func recoverCmd() *cobra.Command {
	var (
		fromCloud            bool
		nodeID, url, dataDir string
		file                 string
		at                   string
		asJSON               bool
		sortMemory           string
		memoryLimit          string
	)
	c := &cobra.Command{
		Use:   "recover --from-cloud --node-id ID [--cloud-url URL] [--at TIME] [--data-dir DIR]",
		Short: "Rebuild a lost node's data directory from the cloud, then validate it",
		Long: `Rebuilds node ID into a new data directory from the cloud: the config version in
force at TIME (the registry), the nearest state snapshot before it, and every record
the cloud holds for the node up to TIME. Then replays the node's processing from the
snapshot and validates: events per stream equal the cloud's, and every window result
and alert the replay produces again equals the synced one. Exits non-zero if the
validation fails. The registry holds no secrets (passwords, header values, URL
credentials): recover lists the keys to fill in again in DIR/holdfast.yaml, and
holdfast run refuses the file until they are. The cloud hands out the records
out of offset order (each priority lane at its own pace): recover holds at most
--sort-memory of them in memory and writes the rest in sorted runs under DIR
(about the records' size once more on disk), removed before it replays.
--memory-limit is a soft limit on Go's memory (as GOMEMLIMIT, which it
overrides when given): the collector runs more often near it rather than let
the heap grow to twice what is live.
Start the node afterwards with
  holdfast run --config DIR/holdfast.yaml
See docs/OPERATIONS.md for the whole procedure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !fromCloud {
				return errors.New("--from-cloud is required: the cloud is the only source recover knows")
			}
			if nodeID == "" {
				return errors.New("--node-id is required")
			}
			var when time.Time
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return fmt.Errorf("--at: %q is not an RFC 3339 time like 2026-11-26T14:00:00Z", at)
				}
				when = t
			}
			if dataDir == "" {
				dataDir = "./holdfast-data-" + nodeID
			}
			sortMem, err := config.ParseByteSize(sortMemory)
			if err != nil || sortMem < 1<<10 || sortMem > 1<<32 {
				return fmt.Errorf("--sort-memory: %q is not a size from 1KiB to 4GiB like 32MiB", sortMemory)
			}
			if err := setRecoverMemoryLimit(memoryLimit, cmd.Flags().Changed("memory-limit")); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var access cloud.Access
			if file != "" {
				// The cloud: section of the node's config: its URL, credentials and TLS.
				cfg, err := config.Load(file)
				if err != nil {
					return err
				}
				main, mainAccess := node.CloudMain(cfg.Cloud)
				access = mainAccess
				if !cmd.Flags().Changed("cloud-url") && main != "" {
					url = main
				}
			}
			logger := newLogger(config.Log{Level: "warn", Format: "text"}, os.Stderr)
			rep, err := recovery.Recover(ctx, recovery.Options{
				CloudURL: url, Access: access, NodeID: nodeID, At: when, DataDir: dataDir, Logger: logger, Progress: cmd.ErrOrStderr(),
				SortMemory: int(sortMem),
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				_ = enc.Encode(rep)
			} else {
				printReport(cmd, rep)
			}
			if !rep.OK() {
				return fmt.Errorf("validation failed: %d problems", len(rep.Problems))
			}
			return nil
		},
	}
	f := c.Flags()
	f.BoolVar(&fromCloud, "from-cloud", false, "rebuild from the cloud (required)")
	f.StringVar(&nodeID, "node-id", "", "the node to rebuild")
	f.StringVar(&url, "cloud-url", "nats://127.0.0.1:4222", "the cloud's NATS URL")
	f.StringVar(&file, "config", "", "a config file whose cloud: section (url, credentials, TLS) is used to reach the cloud")
	f.StringVar(&at, "at", "", "restore the node as of this time (RFC 3339); default: everything the cloud holds")
	f.StringVar(&dataDir, "data-dir", "", "the new data directory (must not exist or be empty); default ./holdfast-data-<node-id>")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&sortMemory, "sort-memory", "32MiB", "memory for putting the cloud's records in offset order; beyond it they wait in sorted runs on disk under the new data directory")
	f.StringVar(&memoryLimit, "memory-limit", defaultRecoverMemoryLimit, "soft limit on Go's memory (heap, stacks, runtime), as GOMEMLIMIT: the collector works harder near it instead of letting the heap grow to twice what is live; 0 for none. Default "+defaultRecoverMemoryLimit+" unless GOMEMLIMIT is set")
	return c
}

// defaultRecoverMemoryLimit keeps recover, a batch job, within the 256 MB RSS
// that a small device rebuilding itself has (docs/BENCHMARKS.md, "Recovery in
// bounded memory"): the executable's pages and what Go does not manage come
// on top of it. Below the live heap it cannot hold RSS down, only cost CPU;
// the collector bounds its own CPU share then (debug.SetMemoryLimit).
const defaultRecoverMemoryLimit = "192MiB"

// setRecoverMemoryLimit applies --memory-limit: the value given, or with the
// flag left out the default, unless GOMEMLIMIT already set one.
func setRecoverMemoryLimit(v string, given bool) error {
	if !given && os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	n, err := config.ParseByteSize(v)
	if err != nil || n > 0 && n < 16<<20 {
		return fmt.Errorf("--memory-limit: %q is not 0 or a size of at least 16MiB like 192MiB", v)
	}
	if n == 0 {
		n = math.MaxInt64 // none: Go's default
	}
	debug.SetMemoryLimit(int64(n))
	return nil
}

func printReport(cmd *cobra.Command, r *recovery.Report) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "node        %s → %s\n", r.NodeID, r.DataDir)
	if r.ConfigRevision > 0 {
		fmt.Fprintf(w, "config      revision %d of %s (written to %s/holdfast.yaml)\n", r.ConfigRevision,
			r.ConfigTime.UTC().Format(time.RFC3339), r.DataDir)
	} else {
		fmt.Fprintf(w, "config      none in the registry: defaults\n")
	}
	if len(r.Redacted) > 0 {
		fmt.Fprintf(w, "secrets     the registry holds none: replace %s in %s/holdfast.yaml before holdfast run:\n",
			config.RedactedMarker, r.DataDir)
		for _, k := range r.Redacted {
			fmt.Fprintf(w, "              %s\n", k)
		}
	}
	if r.Snapshot != "" {
		fmt.Fprintf(w, "snapshot    %s (offset %d)\n", r.Snapshot, r.SnapshotOffset)
	} else {
		fmt.Fprintf(w, "snapshot    none: replayed from the first record\n")
	}
	kinds := make([]string, 0, len(r.Records))
	for k := range r.Records {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	fmt.Fprintf(w, "records     %d offsets restored, %d holes:", r.Cut, r.Holes)
	for _, k := range kinds {
		fmt.Fprintf(w, " %s %d", k, r.Records[k])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "sort        at most %d records held in memory, %d sorted runs on disk\n", r.PeakRecordsHeld, r.SortRuns)
	fmt.Fprintf(w, "replay      %d results verified, %d mismatches\n", r.ReplayVerified, r.ReplayMismatches)
	fmt.Fprintf(w, "took        %s (%.0f records/s)\n", r.Took.Round(time.Millisecond), r.RecordsPerSecond)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note        %s\n", n)
	}
	if r.OK() {
		fmt.Fprintf(w, "validation  passed\n")
		return
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "PROBLEM     %s\n", p)
	}
}
