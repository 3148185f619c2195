package aggregator

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/secret"
)

// Status is the body of the aggregator's GET /v1/status.
type Status struct {
	Role          string       `json:"role"` // "aggregator"
	Started       time.Time    `json:"started"`
	Uptime        string       `json:"uptime"`
	UptimeSeconds float64      `json:"uptime_seconds"`
	NATSURL       string       `json:"nats_url"`
	Cloud         CloudStatus  `json:"cloud"`
	Windows       int          `json:"windows"` // site windows held
	Nodes         []NodeStatus `json:"nodes"`
}

// CloudStatus is the forwarding to the cloud.
type CloudStatus struct {
	URL string `json:"url"` // redacted; "" without a cloud
	// State is off (no cloud URL), connected (the last attempt of every
	// stream went well) or disconnected (LastError says why).
	State     string            `json:"state"`
	Lag       map[string]uint64 `json:"lag"` // messages not yet forwarded, per local stream
	LastError string            `json:"last_error,omitempty"`
}

// NodeStatus is one node that reported to the aggregator.
type NodeStatus struct {
	NodeID     string      `json:"node_id"`
	HTTP       string      `json:"http"`
	State      string      `json:"state"` // live, or lost after LostAfter without a report
	LagRecords uint64      `json:"lag_records"`
	Load       Load        `json:"load"`
	Sinks      []SinkState `json:"sinks"`
	LastSeen   time.Time   `json:"last_seen"`
}

// nodeTable keeps the last report of every node.
type nodeTable struct {
	lostAfter time.Duration
	mu        sync.Mutex
	nodes     map[string]nodeEntry // guarded by mu
}

type nodeEntry struct {
	r    Report
	seen time.Time
}

func newNodeTable(lostAfter time.Duration) *nodeTable {
	return &nodeTable{lostAfter: lostAfter, nodes: map[string]nodeEntry{}}
}

func (t *nodeTable) receive(m *nats.Msg) {
	var r Report
	if err := json.Unmarshal(m.Data, &r); err != nil || r.NodeID == "" {
		return
	}
	t.mu.Lock()
	t.nodes[r.NodeID] = nodeEntry{r: r, seen: time.Now()}
	t.mu.Unlock()
}

func (t *nodeTable) list() []NodeStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]NodeStatus, 0, len(t.nodes))
	for _, e := range t.nodes {
		state := "live"
		if time.Since(e.seen) > t.lostAfter {
			state = "lost"
		}
		sinks := e.r.Sinks
		if sinks == nil {
			sinks = []SinkState{}
		}
		out = append(out, NodeStatus{NodeID: e.r.NodeID, HTTP: e.r.HTTP, State: state, LagRecords: e.r.LagRecords,
			Load: e.r.Load, Sinks: sinks, LastSeen: e.seen.UTC()})
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return cmpString(a.NodeID, b.NodeID) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (t *nodeTable) live() float64 {
	n := 0
	for _, s := range t.list() {
		if s.State == "live" {
			n++
		}
	}
	return float64(n)
}

// Status reports the aggregator's state.
func (a *Aggregator) Status() Status {
	up := time.Since(a.started)
	st := Status{
		Role: "aggregator", Started: a.started.UTC(), Uptime: up.Round(time.Second).String(), UptimeSeconds: up.Seconds(),
		NATSURL: a.NATSURL(), Windows: a.windows.count(), Nodes: a.nodes.list(),
		Cloud: CloudStatus{URL: secret.RedactURL(a.o.CloudURL), State: "off", Lag: map[string]uint64{}},
	}
	if a.o.CloudURL != "" {
		st.Cloud.State = "connected"
	}
	for _, f := range a.fwds {
		st.Cloud.Lag[f.stream] = f.lag()
		if e := f.err(); e != "" && a.o.CloudURL != "" {
			st.Cloud.State, st.Cloud.LastError = "disconnected", e
		}
	}
	return st
}

// handler serves the aggregator's HTTP API.
func (a *Aggregator) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/windows", api.WindowsHandler(api.Options{Windows: a.windows}))
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = statusPage.Execute(w, a.Status())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago": func(t time.Time) string { return time.Since(t).Round(100*time.Millisecond).String() + " ago" },
	"pct": func(f float64) string { return fmt.Sprintf("%.0f %%", f*100) },
	"rate": func(f float64) string {
		if f >= 1000 {
			return fmt.Sprintf("%.1fk/s", f/1000)
		}
		return fmt.Sprintf("%.1f/s", f)
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>holdfast aggregator</title>
<style>body{font:15px system-ui,sans-serif;margin:2em;max-width:60em}td,th{padding:.2em 1em .2em 0;text-align:left}
.ok{color:#1a7f37}.bad{color:#cf222e}</style></head><body>
<h1>holdfast <small>site aggregator</small></h1>
<table>
<tr><td>up</td><td>{{.Uptime}} (since {{.Started.Format "2006-01-02 15:04:05 MST"}})</td></tr>
<tr><td>nodes sync to</td><td>{{.NATSURL}}</td></tr>
<tr><td>cloud</td><td>{{if .Cloud.URL}}{{.Cloud.URL}} {{end}}<span class="{{if eq .Cloud.State "disconnected"}}bad{{else}}ok{{end}}">{{.Cloud.State}}</span>{{if .Cloud.LastError}} — {{.Cloud.LastError}}{{end}}</td></tr>
<tr><td>not yet forwarded</td><td>{{range $s, $n := .Cloud.Lag}}{{$s}}: {{$n}} messages &nbsp; {{end}}</td></tr>
<tr><td>site windows</td><td>{{.Windows}}</td></tr>
</table>
<h2>Nodes</h2>
<table><tr><th>node</th><th>state</th><th>HTTP</th><th>backlog</th><th>events</th><th>CPU</th><th>buffer</th><th>last report</th></tr>
{{range .Nodes}}<tr><td>{{.NodeID}}</td><td class="{{if eq .State "live"}}ok{{else}}bad{{end}}">{{.State}}</td><td>{{.HTTP}}</td>
<td>{{.LagRecords}} records</td><td>{{rate .Load.EventsPerS}}</td><td>{{pct .Load.CPU}}</td><td>{{pct .Load.Buffer}}</td><td>{{ago .LastSeen}}</td></tr>
{{else}}<tr><td colspan="8">no node has reported yet</td></tr>{{end}}
</table></body></html>
`))

// metrics are the aggregator's Prometheus metrics.
type metrics struct {
	reg       prometheus.Registerer
	forwarded *prometheus.CounterVec
	skipped   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reg: reg,
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_aggregator_forwarded_records_total",
			Help: "Records forwarded to the cloud (confirmed or found stored), per local stream.",
		}, []string{"stream"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_aggregator_unreadable_messages_total",
			Help: "Messages in the aggregator's streams that are not holdfast batches and were not forwarded.",
		}, []string{"stream"}),
	}
	reg.MustRegister(m.forwarded, m.skipped)
	return m
}

func (m *metrics) lag(stream string, f func() uint64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "holdfast_aggregator_forward_lag_messages",
		Help:        "Messages of a local stream not yet forwarded to the cloud.",
		ConstLabels: prometheus.Labels{"stream": stream},
	}, func() float64 { return float64(f()) }))
}

func (m *metrics) nodesLive(f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "holdfast_aggregator_nodes_live",
		Help: "Nodes that reported to the aggregator within the last 3 s.",
	}, f))
}
