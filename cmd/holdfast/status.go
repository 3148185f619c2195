package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
)

// statusCmd prints a node's /v1/status for a person: health, buffer,
// processing, each sink's connectivity and backlog, and each alert notifier's.
func statusCmd() *cobra.Command {
	var addr, caFile string
	var raw bool
	var token func() (string, error)
	c := &cobra.Command{
		Use:   "status",
		Short: "Show a running node's health, buffer, processing and sync state",
		RunE: func(c *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: 5 * time.Second}
			base := addr
			if !strings.Contains(base, "://") {
				base = "http://" + base
				if caFile != "" {
					base = "https://" + addr
				}
			}
			if caFile != "" {
				tc, err := tlsconf.Client{CA: caFile}.Config()
				if err != nil {
					return err
				}
				client.Transport = &http.Transport{TLSClientConfig: tc}
			}
			tok, err := token()
			if err != nil {
				return err
			}
			req, err := http.NewRequest(http.MethodGet, base+"/v1/status", nil)
			if err != nil {
				return err
			}
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("no node answering at %s: %w", addr, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			switch resp.StatusCode {
			case http.StatusUnauthorized, http.StatusForbidden:
				return fmt.Errorf("%s refused the request (%s): the node has security on; give an API token with --token, $%s or --token-file (holdfast token add NAME --role read)",
					addr, resp.Status, tokenEnv)
			case http.StatusTooManyRequests:
				return fmt.Errorf("%s refused the request (%s): too many failures from this address; wait and retry", addr, resp.Status)
			}
			if raw {
				_, err := c.OutOrStdout().Write(body)
				return err
			}
			var s struct {
				NodeID   string            `json:"node_id"`
				Version  string            `json:"version"`
				Uptime   string            `json:"uptime"`
				Healthy  bool              `json:"healthy"`
				Problems []string          `json:"problems"`
				Skipped  map[string]uint64 `json:"query_skipped_records"`
				Buffer   struct {
					Segments    int     `json:"segments"`
					Bytes       int64   `json:"bytes"`
					FirstOffset uint64  `json:"first_offset"`
					NextOffset  uint64  `json:"next_offset"`
					Quarantined int64   `json:"quarantined_records"`
					Level       string  `json:"level"`
					LevelSince  string  `json:"level_since"`
					Utilisation float64 `json:"utilisation"`
					Pending     int64   `json:"pending_bytes"`
					Capacity    int64   `json:"capacity_bytes"`
					DiskLimited bool    `json:"disk_limited"`
				} `json:"buffer"`
				MQTT struct {
					Mode string `json:"mode"`
					Addr string `json:"addr"`
				} `json:"mqtt"`
				Processing *struct {
					Replaying   bool              `json:"replaying"`
					Lag         uint64            `json:"lag_records"`
					OpenWindows int               `json:"open_windows"`
					Late        map[string]uint64 `json:"late_events"`
					Firing      int               `json:"alerts_firing"`
				} `json:"processing"`
				Sinks []struct {
					Sink         string  `json:"sink"`
					State        string  `json:"state"`
					Since        string  `json:"since"`
					OfflineSince string  `json:"offline_since"`
					Breaker      string  `json:"breaker"`
					Lag          uint64  `json:"lag_records"`
					LagBytes     int64   `json:"lag_bytes"`
					OldestAge    float64 `json:"oldest_unsynced_seconds"`
					Failures     int     `json:"consecutive_failures"`
					LastError    string  `json:"last_error"`
					Lanes        []struct {
						Lane string `json:"lane"`
						Lag  uint64 `json:"lag_records"`
					} `json:"lanes"`
				} `json:"sinks"`
				Notifiers []alert.NotifierStats `json:"notifiers"`
				HA        *api.HAStatus         `json:"ha"`
			}
			if err := json.Unmarshal(body, &s); err != nil {
				return fmt.Errorf("unexpected answer from %s: %w", addr, err)
			}
			w := c.OutOrStdout()
			health := "healthy"
			if !s.Healthy {
				health = "UNHEALTHY"
			}
			fmt.Fprintf(w, "node        %s (%s), up %s, %s\n", s.NodeID, s.Version, s.Uptime, health)
			for _, p := range s.Problems {
				fmt.Fprintf(w, "  problem   %s\n", p)
			}
			b := s.Buffer
			capacity := "max_bytes"
			if b.DiskLimited {
				capacity = "the disk's room"
			}
			fmt.Fprintf(w, "buffer      %d segments, %.1f MiB held, offsets %d–%d, %d quarantined\n",
				b.Segments, float64(b.Bytes)/(1<<20), b.FirstOffset, b.NextOffset, b.Quarantined)
			fmt.Fprintf(w, "  pressure  level %s since %s: %.1f MiB pending of %.1f MiB capacity (%.0f %%, %s)\n",
				b.Level, b.LevelSince, float64(b.Pending)/(1<<20), float64(b.Capacity)/(1<<20), 100*b.Utilisation, capacity)
			fmt.Fprintf(w, "mqtt        %s %s\n", s.MQTT.Mode, s.MQTT.Addr)
			if h := s.HA; h != nil {
				printHA(w, h)
			}
			if nf, c := s.Skipped[store.SkipNonFinite], s.Skipped[store.SkipCorrupt]; nf+c > 0 {
				fmt.Fprintf(w, "queries     skipped %d records they cannot decode (%d non-finite, %d corrupt)\n", nf+c, nf, c)
			}
			if p := s.Processing; p != nil {
				state := "live"
				if p.Replaying {
					state = "replaying"
				}
				fmt.Fprintf(w, "processing  %s, %d records behind, %d open windows, %d alerts firing, late %v\n",
					state, p.Lag, p.OpenWindows, p.Firing, p.Late)
			} else {
				fmt.Fprintf(w, "processing  off\n")
			}
			if len(s.Sinks) == 0 {
				fmt.Fprintf(w, "sync        off (no cloud.url)\n")
			}
			for _, k := range s.Sinks {
				fmt.Fprintf(w, "sync %-6s %s since %s, breaker %s, %d records (%.1f MiB) behind",
					k.Sink, k.State, k.Since, k.Breaker, k.Lag, float64(k.LagBytes)/(1<<20))
				if k.Lag > 0 {
					fmt.Fprintf(w, ", oldest waiting %s", time.Duration(k.OldestAge*float64(time.Second)).Round(time.Second).String())
					for _, l := range k.Lanes {
						fmt.Fprintf(w, ", %s %d", l.Lane, l.Lag)
					}
				}
				fmt.Fprintf(w, ", %d failures in a row", k.Failures)
				if k.OfflineSince != "" {
					fmt.Fprintf(w, ", offline since %s", k.OfflineSince)
				}
				if k.LastError != "" {
					fmt.Fprintf(w, ", last error: %s", k.LastError)
				}
				fmt.Fprintln(w)
			}
			for _, n := range s.Notifiers {
				kind := "notify"
				if n.Backup {
					kind = "backup"
				}
				fmt.Fprintf(w, "%-11s %s: %d sent, %d failed, %d records behind", kind, n.Name, n.Sent, n.Failed, n.Lag)
				if n.Skipped > 0 {
					fmt.Fprintf(w, ", %d records deleted before it read them", n.Skipped)
				}
				fmt.Fprintln(w)
			}
			return nil
		},
	}
	c.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "the node's HTTP address (https://host:port for a node with security.tls)")
	c.Flags().StringVar(&caFile, "ca", "", "PEM CAs to trust for a node serving HTTPS (implies https://)")
	c.Flags().BoolVar(&raw, "json", false, "print /v1/status as JSON")
	token = tokenFlags(c)
	return c
}

// printHA prints the ha section: the member's role and term, the primary,
// replication, and the member links.
func printHA(w io.Writer, h *api.HAStatus) {
	fmt.Fprintf(w, "ha          %s (member %s)", h.Role, h.Member)
	if h.Term > 0 {
		fmt.Fprintf(w, ", term %d", h.Term)
	}
	if h.Replication != "none" {
		fmt.Fprintf(w, ", %s replication, %d records behind", h.Replication, h.LagRecords)
	}
	fmt.Fprintln(w)
	if h.Primary != nil && h.Role != "primary" {
		fmt.Fprintf(w, "  primary   %s at %s\n", h.Primary.Member, h.Primary.HTTP)
	}
	if h.Role == "primary" {
		switch {
		case h.StandbyState == "paired":
			fmt.Fprintf(w, "  standby   %s holds every acknowledged record and may take over\n", h.Standby)
		case h.StandbyState != "":
			fmt.Fprintf(w, "  standby   none may take over (%s)\n", h.StandbyState)
		}
	}
	for _, l := range h.Links {
		state := "up"
		if !l.Connected {
			state = "DOWN"
		}
		fmt.Fprintf(w, "  link      %s %s\n", l.Member, state)
	}
}
