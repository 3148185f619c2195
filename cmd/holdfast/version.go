package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/node"
)

// Set at build time, as the README shows:
//
//	go build -ldflags "-X github.com/holdfast-edge/holdfast/internal/node.Version=v1.2.3
//	  -X main.commit=$(git rev-parse HEAD) -X main.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" ./cmd/holdfast
//
// Unset, commit and buildDate come from the Go toolchain's VCS stamp
// (vcs.revision, vcs.time) when the binary was built in a git checkout.
var commit, buildDate string

// buildInfo is what `holdfast version` prints.
type buildInfo struct {
	Version, Commit, Date, Modified string
}

func currentBuild() buildInfo {
	b := buildInfo{Version: node.Version, Commit: commit, Date: buildDate}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
				}
			case "vcs.time":
				if b.Date == "" {
					b.Date = s.Value
				}
			case "vcs.modified":
				b.Modified = s.Value
			}
		}
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	} else if b.Modified == "true" && commit == "" {
		b.Commit += " (modified)"
	}
	if b.Date == "" {
		b.Date = "unknown"
	}
	return b
}

// versionLine is the first line of `holdfast version`, and what --version prints.
func versionLine() string { return "holdfast " + currentBuild().Version }

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			b := currentBuild()
			fmt.Fprintf(c.OutOrStdout(), "%s\ncommit: %s\nbuilt:  %s\ngo:     %s %s/%s\n",
				versionLine(), b.Commit, b.Date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
