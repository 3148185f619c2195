package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/config"
)

func configCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Check, print and start config files"}
	c.AddCommand(configCheckCmd(), configPrintCmd(), configInitCmd(), configReferenceCmd())
	return c
}

func configReferenceCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reference",
		Short: "Print the reference of every config key (type, default, meaning) as markdown: docs/CONFIG.md",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := io.WriteString(c.OutOrStdout(), config.Reference())
			return err
		},
	}
}

func configCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a config file and report every problem, each with its line",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			_, err := config.Check(args[0])
			if err == nil {
				fmt.Fprintf(c.OutOrStdout(), "%s: ok\n", args[0])
				return nil
			}
			var p *config.Problem
			if !errors.As(err, &p) {
				return err
			}
			fmt.Fprintln(c.ErrOrStderr(), err)
			n := 1
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				n = len(j.Unwrap())
			}
			return fmt.Errorf("%s is invalid: %d %s", args[0], n, plural(n, "problem", "problems"))
		},
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func configPrintCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "print [--config FILE]",
		Short: "Print the effective config (defaults, then the file) as YAML, secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg := config.Default()
			if file != "" {
				var err error
				if cfg, err = config.Load(file); err != nil {
					return err
				}
			}
			b, err := config.Marshal(config.Redacted(cfg))
			if err != nil {
				return err
			}
			_, err = c.OutOrStdout().Write(b)
			return err
		},
	}
	c.Flags().StringVar(&file, "config", "", "YAML config file (default: none, the defaults alone)")
	return c
}

func configInitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "init [FILE]",
		Short: "Write a commented example config to FILE (never over an existing one) or, with - or no FILE, to stdout",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 || args[0] == "-" {
				_, err := c.OutOrStdout().Write(config.Example)
				return err
			}
			return writeNew(args[0], config.Example, c.ErrOrStderr())
		},
	}
}

// writeNew writes data to a file that must not exist yet.
func writeNew(path string, data []byte, log io.Writer) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists: config init does not overwrite a file; remove it or name another", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(log, "wrote %s; check it with: holdfast config check %s\n", path, path)
	return nil
}
