package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/auth"
)

const (
	defaultDevicesFile = "devices.yaml"
	defaultTokensFile  = "tokens.yaml"
)

func deviceCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "device",
		Short: "Manage device credentials: the devices file (docs/format/auth.md)",
	}
	var path string
	fileFlag := func(cmd *cobra.Command) {
		cmd.Flags().StringVar(&path, "devices", defaultDevicesFile,
			"devices file (security.devices); relative to the current directory")
	}
	var streams []string
	add := &cobra.Command{
		Use:   "add ID",
		Short: "Add a device and print its new token, the only line on stdout (shown once)",
		Long: "Add a device to the devices file (created 0600 if missing) and print its new token,\n" +
			"the only line on stdout. The file keeps only a hash: the token cannot be shown again.\n" +
			"The device sends it as `Authorization: Bearer TOKEN` over HTTP, or as the MQTT password\n" +
			"with its id as the username.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			token, err := auth.AddDevice(path, args[0], streams)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), token)
			fmt.Fprintf(c.ErrOrStderr(), "added device %s to %s; the token above is shown only once\n", args[0], path)
			return nil
		},
	}
	fileFlag(add)
	add.Flags().StringSliceVar(&streams, "streams", nil, "streams the device may send, comma-separated (default: any)")
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a device's token",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := auth.RevokeDevice(path, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "revoked device %s in %s\n", args[0], path)
			return nil
		},
	}
	fileFlag(revoke)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the devices: id, key id, streams, created, revoked (never a token or hash)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			devices, err := auth.ListDevices(path)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tKEY ID\tSTREAMS\tCREATED\tREVOKED")
			for _, d := range devices {
				s := strings.Join(d.Streams, ",")
				if s == "" {
					s = "*"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.ID, d.KeyID, s, stamp(d.Created), stamp(d.Revoked))
			}
			return w.Flush()
		},
	}
	fileFlag(list)
	c.AddCommand(add, revoke, list)
	return c
}

func tokenCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "token",
		Short: "Manage API tokens: the tokens file (docs/format/auth.md)",
	}
	var path string
	fileFlag := func(cmd *cobra.Command) {
		cmd.Flags().StringVar(&path, "tokens", defaultTokensFile,
			"tokens file (security.tokens); relative to the current directory")
	}
	var role string
	add := &cobra.Command{
		Use:   "add NAME --role read|admin",
		Short: "Add an API token and print it, the only line on stdout (shown once)",
		Long: "Add an API token to the tokens file (created 0600 if missing) and print it, the only\n" +
			"line on stdout. The file keeps only a hash: the token cannot be shown again. Role read\n" +
			"may query and read /metrics; admin may also use the admin endpoints.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			r, err := auth.ParseRole(role)
			if err != nil {
				return err
			}
			token, err := auth.AddToken(path, args[0], r)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), token)
			fmt.Fprintf(c.ErrOrStderr(), "added %s token %s to %s; the token above is shown only once\n", r, args[0], path)
			return nil
		},
	}
	fileFlag(add)
	add.Flags().StringVar(&role, "role", "", "read or admin (required)")
	_ = add.MarkFlagRequired("role")
	revoke := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an API token",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := auth.RevokeToken(path, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "revoked token %s in %s\n", args[0], path)
			return nil
		},
	}
	fileFlag(revoke)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the API tokens: name, role, key id, created, revoked (never a token or hash)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			tokens, err := auth.ListTokens(path)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tROLE\tKEY ID\tCREATED\tREVOKED")
			for _, t := range tokens {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.Role, t.KeyID, stamp(t.Created), stamp(t.Revoked))
			}
			return w.Flush()
		},
	}
	fileFlag(list)
	c.AddCommand(add, revoke, list)
	return c
}

// stamp shows a time as RFC 3339 UTC, or "-" for none.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
