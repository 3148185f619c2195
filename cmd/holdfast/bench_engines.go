package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/bench"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/engines"
)

// benchMaxBytes is the retention limit the engines get: far above what a
// bench writes, so nothing is deleted while it is measured.
const benchMaxBytes = 1 << 40

// engineOpeners returns the storage engines `holdfast bench engines` can
// measure, by the name --engines takes: every engine of this build
// (internal/buffer/engines).
func engineOpeners() map[string]bench.EngineOpener {
	out := map[string]bench.EngineOpener{}
	for _, name := range engines.Names {
		out[name] = func(dir string) (buffer.Engine, error) {
			return engines.Open(name, buffer.Options{Dir: dir, MaxBytes: benchMaxBytes})
		}
	}
	return out
}

// parseEngines resolves --engines against the known openers, keeping the
// order given.
func parseEngines(list string, known map[string]bench.EngineOpener) (map[string]bench.EngineOpener, []string, error) {
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	slices.Sort(names)
	picked := map[string]bench.EngineOpener{}
	var order []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		open, ok := known[n]
		if !ok {
			return nil, nil, fmt.Errorf("--engines: unknown engine %q; this build has: %s", n, strings.Join(names, ", "))
		}
		if _, dup := picked[n]; dup {
			continue
		}
		picked[n] = open
		order = append(order, n)
	}
	if len(order) == 0 {
		return nil, nil, fmt.Errorf("--engines: no engine named; this build has: %s", strings.Join(names, ", "))
	}
	return picked, order, nil
}

// enginesJSON is the --json output.
type enginesJSON struct {
	Results   []bench.EngineResult   `json:"results"`
	Reference []bench.ReferenceRange `json:"reference"`
}

func benchEnginesCmd() *cobra.Command {
	var (
		o             bench.EngineBenchOptions
		list, svgFile string
		asJSON, quiet bool
	)
	known := engineOpeners()
	var names []string
	for n := range known {
		names = append(names, n)
	}
	slices.Sort(names)
	c := &cobra.Command{
		Use:   "engines",
		Short: "Compare the buffer's storage engines: durable append, read, restart to ready, disk bytes per record",
		Long: `Measures each storage engine named by --engines in turn, in this process, each
in a fresh directory under --dir:

  append   --records records of --payload-bytes, appended by --appenders
           goroutines in batches of --batch; every Append returns once fsync'd
  read     one reader from offset 0 to the end, right after the appends
  restart  Close, then Open and read the first record (the engine's recovery)
  disk     the engine's files after Close, bytes per record

Group commit needs concurrency, as ingest has: one appender would measure the
disk's fsync latency, not the engine. The defaults, 64 appenders × 16 records,
put up to 1 024 records behind each fsync.

--repeat runs every engine again, every other run in reverse order. Put --dir
on the disk to measure: on tmpfs an fsync costs nothing. Engines in this
build: ` + strings.Join(names, ", ") + ".",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var err error
			if o.Engines, o.Order, err = parseEngines(list, known); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			if !quiet {
				o.Progress = os.Stderr
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			results, err := bench.BenchEngines(ctx, o)
			if len(results) > 0 {
				out := c.OutOrStdout()
				if asJSON {
					enc := json.NewEncoder(out)
					enc.SetIndent("", "  ")
					if werr := enc.Encode(enginesJSON{Results: results, Reference: bench.SeedStorageTiers}); werr != nil {
						return werr
					}
				} else if werr := bench.WriteEnginesText(out, results, bench.SeedStorageTiers); werr != nil {
					return werr
				}
				if svgFile != "" {
					if werr := writeEnginesSVG(svgFile, results); werr != nil {
						return werr
					}
					if !quiet {
						fmt.Fprintf(os.Stderr, "chart written to %s\n", svgFile)
					}
				}
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&list, "engines", strings.Join(names, ","), "engines to compare, comma-separated, run in this order")
	f.IntVar(&o.Records, "records", bench.DefaultEngineRecords, "records appended to each engine")
	f.IntVar(&o.PayloadBytes, "payload-bytes", bench.DefaultEnginePayload, "bytes per record (60: an event record)")
	f.IntVar(&o.Appenders, "appenders", bench.DefaultEngineAppenders, "concurrent appending goroutines")
	f.IntVar(&o.Batch, "batch", bench.DefaultEngineBatch, "records per Append call")
	f.IntVar(&o.Repeat, "repeat", 1, "runs of every engine, alternating the order")
	f.StringVar(&o.Dir, "dir", "", "where the engines' directories are made (default: the system's temporary directory)")
	f.StringVar(&svgFile, "svg", "", "also write an SVG chart of the results to this file")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	return c
}

// writeEnginesSVG writes the chart to path.
func writeEnginesSVG(path string, results []bench.EngineResult) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.EnginesSVG(f, results, bench.SeedStorageTiers); err != nil {
		f.Close()
		return fmt.Errorf("--svg: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--svg: %w", err)
	}
	return nil
}
