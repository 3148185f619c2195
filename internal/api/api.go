// Package api is holdfast's HTTP surface apart from ingest itself: local event
// queries, status, health, Prometheus metrics and the status page. Routes and
// response shapes follow DESIGN §10 and are a public interface. With
// Options.Auth every route but /healthz and ingest needs an API token (auth.go);
// LimitPerSource bounds the requests one address has in progress.
//
// prometheus/client_golang's promhttp serves /metrics.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/peerwindows"
	"github.com/holdfast-edge/holdfast/internal/pressure"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/suggest"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Status is the body of GET /v1/status.
type Status struct {
	NodeID   string       `json:"node_id"`
	Version  string       `json:"version"`
	Started  string       `json:"started"`
	Uptime   string       `json:"uptime"`
	Healthy  bool         `json:"healthy"`
	Problems []string     `json:"problems,omitempty"`
	Buffer   BufferStatus `json:"buffer"`
	MQTT     MQTTStatus   `json:"mqtt"`
	// Processing is the stream processor's state (process.Status).
	Processing any `json:"processing,omitempty"`
	// Sinks are the cloud sync sinks' states (uplink.SinkStatus).
	Sinks []any `json:"sinks,omitempty"`
	// Backup is the state snapshots' and config registry's state (backup.Status).
	Backup any `json:"backup,omitempty"`
	// Notifiers are the alert notifiers' deliveries and how far each is
	// behind the log, primaries first, then the backup command.
	Notifiers []alert.NotifierStats `json:"notifiers,omitempty"`
	// Losses counts the records that left the buffer unsynced, by reason and
	// stream; each is in a loss-ledger record (docs/format/ledger.md).
	Losses map[string]map[string]uint64 `json:"losses"`
	// QuerySkipped counts, by reason, the records local queries could not
	// decode and skipped (store.SkipNonFinite, store.SkipCorrupt) since
	// the node started; also holdfast_query_skipped_records_total.
	QuerySkipped map[string]uint64 `json:"query_skipped_records"`
	// HA is this node's place in an HA pair; absent outside one.
	HA *HAStatus `json:"ha,omitempty"`
	// Site is this node's site: its members and the assignment strategy;
	// absent outside one.
	Site any `json:"site,omitempty"`
	// Ingest is what ingest acknowledged lately.
	Ingest *IngestStatus `json:"ingest,omitempty"`
	// FiringAlerts are the alerts firing now: the node's own (sink-offline,
	// buffer-pressure) and the rules'.
	FiringAlerts []alert.Alert `json:"firing_alerts"`
	// Clock is the node's offset from the cloud's clock and its jumps.
	Clock *ClockStatus `json:"clock,omitempty"`
	// Degradation is the node's degradation level and Triggers the scaling
	// triggers (DESIGN §7, internal/degrade).
	Degradation *degrade.Status         `json:"degradation,omitempty"`
	Triggers    []degrade.TriggerStatus `json:"triggers,omitempty"`
	// Hotspots are the hot spots seen now (pressure.Hotspot, DESIGN §7); [] when none.
	Hotspots []pressure.Hotspot `json:"hotspots"`
}

// IngestStatus is ingest's recent throughput: events acknowledged per
// second and the mean time to acknowledge a batch, over the last
// HistoryInterval or so; and the events acknowledged since start.
type IngestStatus struct {
	RatePerSecond  float64 `json:"rate_per_second"`
	AckMeanSeconds float64 `json:"ack_mean_seconds"`
	AcceptedTotal  uint64  `json:"accepted_total"`
}

// HAStatus is a pair member's state: its role (primary, standby, or
// candidate while it knows of no primary it may follow or be), the current
// term, the replication mode and lag, and the primary.
type HAStatus struct {
	Role        string     `json:"role"`
	Term        uint64     `json:"term"`
	Replication string     `json:"replication"`
	LagRecords  uint64     `json:"lag_records"`
	Primary     *HAPrimary `json:"primary"`
	Member      string     `json:"member"`
	// Standby is the member that may take over ("" while the primary is
	// alone); StandbyState the primary's view: alone, joining or paired.
	Standby      string `json:"standby"`
	StandbyState string `json:"standby_state,omitempty"`
	// PrimaryNext is, on a standby, the primary's next offset as last seen;
	// LastContact when the two last spoke.
	PrimaryNext uint64 `json:"primary_next,omitempty"`
	LastContact string `json:"last_contact,omitempty"`
	// Links are the other members of the pair and whether this member's
	// link to each is up.
	Links []HALink `json:"links"`
}

// HALink is one other member as the member link sees it.
type HALink struct {
	Member    string `json:"member"`
	Connected bool   `json:"connected"`
}

// HAPrimary is where the pair's primary takes devices.
type HAPrimary struct {
	NodeID string `json:"node_id"`
	HTTP   string `json:"http"`
	MQTT   string `json:"mqtt,omitempty"`
	Member string `json:"member"`
}

// BufferStatus describes the durable buffer.
type BufferStatus struct {
	Engine             string `json:"engine"`
	Segments           int    `json:"segments"`
	Bytes              int64  `json:"bytes"`
	MaxBytes           int64  `json:"max_bytes"`
	FirstOffset        uint64 `json:"first_offset"`
	NextOffset         uint64 `json:"next_offset"`
	QuarantinedRecords int64  `json:"quarantined_records"`
	Error              string `json:"error,omitempty"`
	// Level is the pressure level (normal, warning, critical, emergency,
	// full) at Utilisation = PendingBytes / CapacityBytes, held since
	// LevelSince. PendingBytes are the bytes of the records some sink has not
	// confirmed; CapacityBytes is MaxBytes, or less when the disk has less
	// room (DiskLimited); DiskFreeBytes is -1 where it is not measured.
	Level         string  `json:"level"`
	LevelSince    string  `json:"level_since"`
	Utilisation   float64 `json:"utilisation"`
	PendingBytes  int64   `json:"pending_bytes"`
	CapacityBytes int64   `json:"capacity_bytes"`
	DiskFreeBytes int64   `json:"disk_free_bytes"`
	DiskLimited   bool    `json:"disk_limited,omitempty"`
}

// MQTTStatus describes MQTT ingest.
type MQTTStatus struct {
	Mode      string `json:"mode"`
	Addr      string `json:"addr,omitempty"`
	Connected *bool  `json:"connected,omitempty"` // external mode only
}

// Options wire the API to the node.
type Options struct {
	Ingest   http.Handler        // POST /v1/events
	Store    *store.Store        // GET /v1/events, closed windows for GET /v1/windows
	Status   func() Status       // GET /v1/status, /healthz, /
	Gatherer prometheus.Gatherer // GET /metrics
	// OpenWindows gives the partial results of open windows for GET /v1/windows.
	OpenWindows func(stream, device string, size time.Duration, from, to int64) []window.Result
	// Alerts gives alerts for GET /v1/alerts, filtered by state and severity.
	Alerts func(state, severity string) []alert.Alert
	// Peer, if set, gives the other node's window partials in an
	// active-active pair (peerwindows.Fetch): GET /v1/windows then answers
	// the site's windows, this node's and the peer's merged, unless
	// scope=node. OpenPartials gives this node's open windows' partials.
	Peer         func(ctx context.Context, q peerwindows.Query) (peerwindows.Page, error)
	OpenPartials func(stream, device string, size time.Duration, from, to int64) []window.Partial
	// Windows, if set, answers GET /v1/windows alone, site-wide, as the
	// windows of several nodes already merged (the site aggregator); Store,
	// OpenWindows and Peer are then not used for it.
	Windows peerwindows.Source
	// PeerTimeout bounds the wait for the peer; default 1 s. Past it, or
	// on the peer's error, the answer is this node's alone, marked partial.
	PeerTimeout time.Duration
	// WindowSizes, if set, are the configured window sizes (windows.sizes):
	// GET /v1/windows answers 400 to a size that is not one of them.
	WindowSizes []time.Duration
	// History, if set, gives the last hour's samples for
	// GET /v1/status/history.
	History func() []Sample
	// Auth, if set, requires an API token on every route but /healthz, /readyz and
	// POST /v1/events (which authenticates devices itself): role read for
	// the queries, status, /metrics and the status page. No route needs
	// admin yet; admin allows all that read does.
	Auth *auth.Guard
}

// New returns the node's HTTP handler.
func New(o Options) http.Handler {
	mux := http.NewServeMux()
	read := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, needRole(o.Auth, auth.RoleRead, h)) }
	mux.Handle("POST /v1/events", o.Ingest)
	read("GET /v1/events", knownParams(eventParams, func(w http.ResponseWriter, r *http.Request) { queryEvents(w, r, o.Store) }))
	read("GET /v1/windows", knownParams(windowParams, func(w http.ResponseWriter, r *http.Request) { queryWindows(w, r, o) }))
	read("GET /v1/alerts", knownParams(alertParams, func(w http.ResponseWriter, r *http.Request) { queryAlerts(w, r, o) }))
	read("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, o.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s := o.Status()
		if !s.Healthy {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "problems": s.Problems})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if reasons := NotReady(o.Status()); len(reasons) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reasons": reasons})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "reasons": []string{}})
	})
	read("GET /v1/status/history", func(w http.ResponseWriter, r *http.Request) {
		samples := []Sample{}
		if o.History != nil {
			samples = o.History()
		}
		writeJSON(w, http.StatusOK, map[string]any{"interval": HistoryInterval.String(), "samples": samples})
	})
	read("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}).ServeHTTP)
	read("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(statusPage)
	})
	return mux
}

// WindowsHandler serves GET /v1/windows from o as New does: the same
// parameters, validation and JSON. The site aggregator serves it with
// Options.Windows set.
func WindowsHandler(o Options) http.Handler {
	return needRole(o.Auth, auth.RoleRead, knownParams(windowParams, func(w http.ResponseWriter, r *http.Request) { queryWindows(w, r, o) }))
}

// NotReady returns why a node in status s should not be sent writes (GET
// /readyz answers 503 with them), or nothing when it takes them: its buffer
// failed (nothing is acknowledged), the buffer's pressure is at emergency
// (only critical streams are taken) or full (nothing is), or it is an HA
// standby or candidate (writes go to the primary). A sink offline is not a
// reason: the node buffers and acknowledges while the cloud is away.
func NotReady(s Status) []string {
	var reasons []string
	if s.Buffer.Error != "" {
		reasons = append(reasons, "buffer failed, nothing is acknowledged: "+s.Buffer.Error)
	}
	switch s.Buffer.Level {
	case "emergency":
		reasons = append(reasons, "buffer pressure emergency: only critical streams are taken")
	case "full":
		reasons = append(reasons, "buffer full: no events are taken")
	}
	if h := s.HA; h != nil && h.Role != "primary" && h.Role != "active" {
		r := "ha " + h.Role + ": writes go to the primary"
		if h.Primary != nil && h.Primary.HTTP != "" {
			r += " at " + h.Primary.HTTP
		}
		reasons = append(reasons, r)
	}
	return reasons
}

// The parameters each query route takes.
var (
	eventParams  = []string{"device_id", "stream", "from", "to", "limit", "cursor"}
	windowParams = []string{"stream", "device_id", "size", "from", "to", "limit", "cursor", "scope"}
	alertParams  = []string{"state", "severity"}
)

// knownParams answers 400 to a request with a query parameter not in known,
// naming it and the known one it is closest to, so that a typo is not
// silently ignored.
func knownParams(known []string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var unknown []string
		for name := range r.URL.Query() {
			if !slices.Contains(known, name) {
				unknown = append(unknown, name)
			}
		}
		if len(unknown) == 0 {
			h(w, r)
			return
		}
		sort.Strings(unknown)
		msg := "unknown parameter " + unknown[0]
		if k, ok := suggest.Closest(unknown[0], known); ok {
			msg += " (did you mean " + k + "?)"
		}
		if len(unknown) > 1 {
			msg += fmt.Sprintf(" and %d more", len(unknown)-1)
		}
		msg += "; " + r.URL.Path + " takes " + strings.Join(known, ", ")
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
	}
}

// queryEvents serves GET /v1/events?device_id=&stream=&from=&to=&limit=&cursor=.
func queryEvents(w http.ResponseWriter, r *http.Request, s *store.Store) {
	q, err := parseQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	page, err := s.Query(q)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	b := make([]byte, 0, 64+len(page.Events)*160)
	b = append(b, `{"events":[`...)
	for i, e := range page.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"offset":%d,`, e.Offset)
		if e.Late {
			b = append(b, `"late":true,`...)
		}
		b = append(b, e.AppendJSON(nil)[1:]...)
	}
	b = append(b, ']')
	if page.Next != 0 {
		b = fmt.Appendf(b, `,"next":"%d"`, page.Next)
	}
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func parseQuery(r *http.Request) (store.Query, error) {
	v := r.URL.Query()
	q := store.Query{DeviceID: v.Get("device_id"), Stream: v.Get("stream")}
	var err error
	if q.From, err = parseTime("from", v.Get("from")); err != nil {
		return q, err
	}
	if q.To, err = parseTime("to", v.Get("to")); err != nil {
		return q, err
	}
	if q.Limit, q.Before, err = paging(v.Get("limit"), v.Get("cursor")); err != nil {
		return q, err
	}
	return q, nil
}

// parseTime accepts RFC 3339 or Unix epoch milliseconds.
func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, fmt.Errorf("%s: %q is neither RFC 3339 nor Unix milliseconds", name, s)
	}
	return t, nil
}

// writeJSON answers v as JSON. It encodes to memory first, so that a value
// encoding/json refuses (a NaN or ±Inf, which no query result should hold)
// gives a whole 500 answer naming the problem, never a 200 cut off halfway.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]string{"error": "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// statusPage is the status page at /: one self-contained file, embedded,
// that reads /v1/status, /v1/status/history and /v1/windows
// (docs/OPERATIONS.md, "The status page").
//
//go:embed ui/status.html
var statusPage []byte
