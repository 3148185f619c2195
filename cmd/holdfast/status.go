package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/node"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// statusCmd prints a node's /v1/status for a person: a headline that is
// "ok" only when nothing needs attention, then ingest, buffer, processing,
// each sink, the firing alerts, the notifiers and the losses; with --watch
// it redraws every 2 s until interrupted.
func statusCmd() *cobra.Command {
	var addr, caFile string
	var raw, watch bool
	var every time.Duration
	var token func() (string, error)
	c := &cobra.Command{
		Use:   "status",
		Short: "Show a running node's health, buffer, processing and sync state",
		RunE: func(c *cobra.Command, _ []string) error {
			base, err := normaliseAddr(addr, caFile != "")
			if err != nil {
				return err
			}
			client := &http.Client{Timeout: 5 * time.Second}
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
			w := c.OutOrStdout()
			once := func() error {
				body, err := fetchStatus(client, base, tok)
				if err != nil {
					return err
				}
				if raw {
					_, err := w.Write(body)
					return err
				}
				var s statusDoc
				if err := json.Unmarshal(body, &s); err != nil {
					return fmt.Errorf("unexpected answer from %s: %w", base, err)
				}
				renderStatus(w, &s, time.Now())
				return nil
			}
			if !watch {
				return once()
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			for {
				fmt.Fprint(w, "\033[H\033[2J") // home, clear: redraw in place
				fmt.Fprintf(w, "holdfast status --watch: %s, every %v, Ctrl-C to stop\n\n", base, every)
				if err := once(); err != nil {
					fmt.Fprintf(w, "%v\n", err) // keep watching: the node may come back
				}
				select {
				case <-ctx.Done():
					fmt.Fprintln(w)
					return nil
				case <-time.After(every):
				}
			}
		},
	}
	c.Flags().StringVar(&addr, "addr", "127.0.0.1:8080", "the node's HTTP address: host:port or a URL (https://host:port for a node with security.tls)")
	c.Flags().StringVar(&caFile, "ca", "", "PEM CAs to trust for a node serving HTTPS (implies https://)")
	c.Flags().BoolVar(&raw, "json", false, "print /v1/status as JSON")
	c.Flags().BoolVarP(&watch, "watch", "w", false, "redraw in place every --interval until Ctrl-C")
	c.Flags().DurationVar(&every, "interval", 2*time.Second, "how often --watch redraws")
	token = tokenFlags(c)
	return c
}

// normaliseAddr turns --addr into a base URL: "host:port", ":port" (the
// loopback), "host" (port 8080) or an http(s) URL, whose path is dropped.
// tls (--ca) makes a scheme-less address https, and refuses http://.
func normaliseAddr(addr string, tls bool) (string, error) {
	a := strings.TrimSpace(addr)
	if a == "" {
		return "", errors.New("--addr is empty: give host:port or a URL like http://127.0.0.1:8080")
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	if strings.Contains(a, "://") {
		u, err := url.Parse(a)
		if err != nil {
			return "", fmt.Errorf("--addr %q: %w", addr, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return "", fmt.Errorf("--addr %q: the scheme must be http or https", addr)
		}
		if tls && u.Scheme == "http" {
			return "", fmt.Errorf("--addr %q is http:// but --ca asks for https", addr)
		}
		if u.Host == "" {
			return "", fmt.Errorf("--addr %q names no host", addr)
		}
		scheme, a = u.Scheme, u.Host
	} else {
		a = strings.TrimRight(a, "/")
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		// No port: the host alone (a bare IPv6 address may come bracketed).
		host, port = strings.Trim(a, "[]"), "8080"
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// fetchStatus GETs base/v1/status.
func fetchStatus(client *http.Client, base, tok string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/v1/status", nil)
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no node answering at %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return body, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%s refused the request (%s): the node has security on; give an API token with --token, $%s or --token-file (holdfast token add NAME --role read)",
			base, resp.Status, tokenEnv)
	case http.StatusTooManyRequests:
		return nil, fmt.Errorf("%s refused the request (%s): too many failures from this address; wait and retry", base, resp.Status)
	}
	return nil, fmt.Errorf("%s answered %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
}

// statusDoc is /v1/status with its sections typed: the API's Status, with
// the sections it holds as any read as the types the node puts there.
type statusDoc struct {
	api.Status
	Processing *process.Status     `json:"processing"`
	Sinks      []uplink.SinkStatus `json:"sinks"`
	Backup     json.RawMessage     `json:"backup"`
	Site       *node.SiteStatus    `json:"site"`
}

// assess says whether the node needs attention: "FAILING" (it cannot
// acknowledge, or takes only some streams), "NEEDS ATTENTION" (anything an
// operator should look at: a problem, a sink not connected or its breaker
// not closed, an alert firing, buffer pressure, losses, a notifier failing),
// or "OK" — the same rules as the status page's headline.
func assess(s *statusDoc, now time.Time) (string, []string) {
	var bad, warn []string
	if !s.Healthy {
		bad = append(bad, "unhealthy")
	}
	switch l := s.Buffer.Level; l {
	case "", "normal":
	case "emergency", "full":
		bad = append(bad, "buffer pressure "+l)
	default:
		warn = append(warn, "buffer pressure "+l)
	}
	for _, p := range s.Problems {
		if strings.HasPrefix(p, "buffer failed") {
			bad = append(bad, p)
		} else if !strings.HasPrefix(p, "sink ") {
			warn = append(warn, p) // the sinks are shown in their own lines
		}
	}
	for _, k := range s.Sinks {
		if k.State != uplink.Connected {
			warn = append(warn, fmt.Sprintf("sink %s %s", k.Sink, k.State))
		}
		if k.Breaker != uplink.BreakerClosed {
			warn = append(warn, fmt.Sprintf("sink %s: circuit breaker %s", k.Sink, k.Breaker))
		}
	}
	if n := len(s.FiringAlerts); n > 0 {
		msg := fmt.Sprintf("%d alert%s firing", n, plural(n, "", "s"))
		crit := false
		for _, a := range s.FiringAlerts {
			crit = crit || a.Severity == "critical"
		}
		if crit {
			bad = append(bad, msg)
		} else {
			warn = append(warn, msg)
		}
	}
	if n := totalLosses(s.Losses); n > 0 {
		warn = append(warn, fmt.Sprintf("%d records lost since the ledger began", n))
	}
	for _, n := range s.Notifiers {
		if !n.LastFailure.IsZero() && now.Sub(n.LastFailure) < time.Hour {
			warn = append(warn, fmt.Sprintf("notifier %s failed %s", n.Name, ago(n.LastFailure, now)))
		}
	}
	switch {
	case len(bad) > 0:
		return "FAILING", append(bad, warn...)
	case len(warn) > 0:
		return "NEEDS ATTENTION", warn
	}
	return "OK", nil
}

func totalLosses(l map[string]map[string]uint64) uint64 {
	var n uint64
	for _, byStream := range l {
		for _, v := range byStream {
			n += v
		}
	}
	return n
}

// renderStatus writes s as a summary: a headline, then one section per
// part, tables aligned.
func renderStatus(w io.Writer, s *statusDoc, now time.Time) {
	state, reasons := assess(s, now)
	fmt.Fprintf(w, "holdfast %s  %s  up %s  %s\n", s.NodeID, s.Version, s.Uptime, state)
	for _, r := range reasons {
		fmt.Fprintf(w, "  ! %s\n", r)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }

	if in := s.Ingest; in != nil {
		ack := "–"
		if in.AckMeanSeconds > 0 {
			ack = latency(in.AckMeanSeconds)
		}
		row("Ingest", fmt.Sprintf("%s events/s, ack %s (mean), %s acknowledged since start",
			count(in.RatePerSecond), ack, count(float64(in.AcceptedTotal))))
	}
	b := s.Buffer
	room := ""
	if b.DiskLimited {
		room = ", limited by the disk"
	}
	row("Buffer", fmt.Sprintf("%s, pressure %s since %s: %s unsynced of %s (%.1f%%%s)",
		b.Engine, b.Level, agoRFC3339(b.LevelSince, now), bytesIEC(b.PendingBytes), bytesIEC(b.CapacityBytes), 100*b.Utilisation, room))
	row("", fmt.Sprintf("%s on disk in %d segment%s, offsets %d–%d, %d quarantined",
		bytesIEC(b.Bytes), b.Segments, plural(b.Segments, "", "s"), b.FirstOffset, b.NextOffset, b.QuarantinedRecords))
	mqtt := s.MQTT.Mode
	if s.MQTT.Addr != "" {
		mqtt += " " + s.MQTT.Addr
	}
	if s.MQTT.Connected != nil && !*s.MQTT.Connected {
		mqtt += ", NOT CONNECTED"
	}
	row("MQTT", mqtt)
	if d := s.Degradation; d != nil {
		f := d.Features
		row("Level", fmt.Sprintf("degradation %s since %s: ingestion %s, windowing %s, alerting %s, cloud sync %s, queries %s",
			d.Level, agoRFC3339(d.Since, now), f.RawIngestion, f.Windowing, f.Alerting, f.CloudSync, f.LocalQueries))
	}
	if len(s.Triggers) > 0 {
		var ts []string
		for _, t := range s.Triggers {
			ts = append(ts, fmt.Sprintf("%s %.3g %s", t.Metric, t.Value, t.State))
		}
		row("Triggers", strings.Join(ts, ", "))
	}
	if p := s.Processing; p != nil {
		st := "live"
		if p.Replaying {
			st = "replaying the log"
		}
		row("Processing", fmt.Sprintf("%s, %s records behind, %d open windows, %d rule alerts firing, late events: %s",
			st, count(float64(p.Lag)), p.OpenWindows, p.Firing, lateEvents(p.Late)))
	} else {
		row("Processing", "off")
	}
	if nf, c := s.QuerySkipped[store.SkipNonFinite], s.QuerySkipped[store.SkipCorrupt]; nf+c > 0 {
		row("Queries", fmt.Sprintf("skipped %d records they cannot decode (%d non-finite, %d corrupt)", nf+c, nf, c))
	}
	if n := totalLosses(s.Losses); n > 0 {
		row("Losses", lossList(s.Losses))
	} else {
		row("Losses", "none")
	}
	if c := s.Clock; c != nil {
		row("Clock", clockLine(c, now))
	}
	tw.Flush()
	if h := s.HA; h != nil {
		fmt.Fprintln(w)
		printHA(w, h)
	}
	if st := s.Site; st != nil {
		fmt.Fprintln(w)
		printSite(w, st)
	}

	fmt.Fprintln(w)
	if len(s.Sinks) == 0 {
		fmt.Fprintln(w, "Sync: off (no cloud configured)")
	} else {
		fmt.Fprintln(w, "Sync")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row("  SINK", "STATE", "BREAKER", "LAG", "OLDEST UNSYNCED", "LAST SYNC", "LAST ERROR")
		for _, k := range s.Sinks {
			st := fmt.Sprintf("%s since %s", k.State, ago(k.Since, now))
			if k.State == uplink.Offline && !k.OfflineSince.IsZero() {
				st = "offline since " + ago(k.OfflineSince, now)
			}
			oldest := "–"
			if !k.OldestUnsynced.IsZero() {
				oldest = ago(k.OldestUnsynced, now)
			}
			lastErr := k.LastError
			if lastErr == "" {
				lastErr = "–"
			} else if k.ConsecutiveFailures > 0 {
				lastErr = fmt.Sprintf("%s (%d in a row)", lastErr, k.ConsecutiveFailures)
			}
			row("  "+k.Sink, st, k.Breaker, fmt.Sprintf("%s records (%s)", count(float64(k.LagRecords)), bytesIEC(k.LagBytes)),
				oldest, ago(k.LastSuccess, now), lastErr)
		}
		tw.Flush()
		for _, k := range s.Sinks {
			if k.Link != nil && k.Link.Metered {
				fmt.Fprintf(w, "  %s on a metered link (%s): only the critical lane, window results and alerts go; the rest waits\n", k.Sink, k.Link.URL)
			}
			if k.AggregatesOnly {
				fmt.Fprintf(w, "  %s syncs aggregates only (degradation level limited): only the critical lane, window results and alerts go; the rest waits\n", k.Sink)
			}
		}
		for _, k := range s.Sinks {
			if len(k.Lanes) < 2 || k.LagRecords == 0 {
				continue
			}
			var lanes []string
			for _, l := range k.Lanes {
				n := count(float64(l.LagRecords))
				if l.LagAtLeast {
					n = "≥" + n
				}
				lanes = append(lanes, l.Lane+" "+n)
			}
			fmt.Fprintf(w, "  %s lanes behind: %s\n", k.Sink, strings.Join(lanes, ", "))
		}
	}

	fmt.Fprintln(w)
	if len(s.FiringAlerts) == 0 {
		fmt.Fprintln(w, "Alerts firing: none")
	} else {
		fmt.Fprintln(w, "Alerts firing")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row("  RULE", "SEVERITY", "STREAM", "DEVICE", "VALUE", "SINCE")
		for _, a := range s.FiringAlerts {
			dev := a.DeviceID
			if dev == "" {
				dev = "–"
			}
			row("  "+a.Rule, string(a.Severity), a.Stream, dev, fmt.Sprintf("%g", a.Value), ago(time.UnixMilli(a.FiredAt), now))
		}
		tw.Flush()
	}

	if len(s.Hotspots) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Hot spots")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row("  TYPE", "STREAM", "KEY", "SHARE", "RATIO")
		for _, h := range s.Hotspots {
			row("  "+h.Type, h.Stream, cmp.Or(h.Key, "–"), fmt.Sprintf("%.0f %%", 100*h.Share), fmt.Sprintf("%.1f×", h.Ratio))
		}
		tw.Flush()
	}

	if len(s.Notifiers) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Notifiers")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row("  NAME", "SENT", "FAILED", "DROPPED", "BEHIND", "LAST ERROR")
		for _, n := range s.Notifiers {
			name := n.Name
			if n.Backup {
				name += " (backup)"
			}
			last := "–"
			if n.LastError != "" {
				last = n.LastError + ", " + ago(n.LastFailure, now)
			}
			row("  "+name, fmt.Sprint(n.Sent), fmt.Sprint(n.Failed), fmt.Sprint(n.Dropped), fmt.Sprintf("%d records", n.Lag), last)
		}
		tw.Flush()
	}
}

// printHA prints the ha section: the member's role and term, the primary,
// replication, and the member links.
func printHA(w io.Writer, h *api.HAStatus) {
	fmt.Fprintf(w, "HA          %s (member %s)", h.Role, h.Member)
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

// printSite prints the site section: the strategy and every member with its
// state, addresses, zone and load.
func printSite(w io.Writer, s *node.SiteStatus) {
	alive := 0
	for _, m := range s.Members {
		if m.State == "alive" || m.State == "suspect" {
			alive++
		}
	}
	fmt.Fprintf(w, "Site        %s assignment, %d of %d members alive", s.Assign, alive, len(s.Members))
	if s.Zone != "" {
		fmt.Fprintf(w, ", this node in zone %s", s.Zone)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, m := range s.Members {
		name := m.NodeID
		if m.NodeID == s.Self {
			name += " (this node)"
		}
		zone := m.Zone
		if zone == "" {
			zone = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\tzone %s\t%s events/s\tcpu %.0f %%\tbuffer %.0f %%\tlag %d\n",
			name, m.State, m.HTTP, zone, count(m.Load.EventsPerSec), 100*m.Load.CPU, 100*m.Load.Buffer, m.Load.LagRecords)
	}
	tw.Flush()
}

// lateEvents formats late-event counts by stream: "temperature 1, humidity 3",
// or "none".
func lateEvents(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// lossList formats losses by reason and stream: "temp 12 (overflow), ...".
func lossList(l map[string]map[string]uint64) string {
	var parts []string
	for reason, byStream := range l {
		for stream, n := range byStream {
			if n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d (%s)", stream, n, reason))
			}
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// bytesIEC formats n bytes with binary units: "512 B", "1.0 GiB".
func bytesIEC(n int64) string {
	if n < 0 {
		return "–"
	}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, units := float64(n)/1024, []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// count formats a count or rate shortly: "950", "12.3k", "4.5M".
func count(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.1fG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	case v == float64(int64(v)):
		return fmt.Sprintf("%d", int64(v))
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// latency formats seconds as µs, ms or s.
func latency(sec float64) string {
	switch {
	case sec < 0.001:
		return fmt.Sprintf("%.0f µs", sec*1e6)
	case sec < 1:
		return fmt.Sprintf("%.1f ms", sec*1e3)
	}
	return fmt.Sprintf("%.2f s", sec)
}

// human formats a duration for a person: "45 s", "3 min", "2.5 h", "4.0 days".
func human(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Round(time.Minute).Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%.1f h", d.Hours())
	}
	return fmt.Sprintf("%.1f days", d.Hours()/24)
}

// ago formats t relative to now: "3 min ago", "just now", "never".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return human(d) + " ago"
}

func agoRFC3339(s string, now time.Time) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return ago(t, now)
}
