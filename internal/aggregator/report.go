package aggregator

import (
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/holdfast-edge/holdfast/internal/cloud"
)

// StatusSubjectPrefix starts the core NATS subject a node reports its status
// on: holdfast-site.status.<node_id> (docs/format/aggregator.md, §4).
const StatusSubjectPrefix = "holdfast-site.status."

// Report is what a node tells the aggregator about itself every second.
type Report struct {
	NodeID string      `json:"node_id"`
	HTTP   string      `json:"http"`
	Sinks  []SinkState `json:"sinks"`
	// LagRecords is the aggregator sink's backlog.
	LagRecords uint64 `json:"lag_records"`
	Load       Load   `json:"load"`
}

// SinkState is one sink of a node as its report shows it.
type SinkState struct {
	Sink       string `json:"sink"`
	State      string `json:"state"`
	LagRecords uint64 `json:"lag_records"`
}

// Load is how busy a node is.
type Load struct {
	EventsPerS float64 `json:"events_per_s"` // records appended per second
	CPU        float64 `json:"cpu"`          // CPU seconds per second of the node's process
	Buffer     float64 `json:"buffer"`       // buffer utilisation, 0–1
}

// ReporterOptions configure a Reporter.
type ReporterOptions struct {
	URL    string       // the aggregator, site.aggregator
	Access cloud.Access // its token and TLS
	NodeID string
	// Every is the report interval; default 1 s.
	Every time.Duration
	// Report gives the report to send; called once per interval.
	Report func() Report
	Logger *slog.Logger
}

// Reporter sends a node's Report to the aggregator every interval over a
// connection of its own, which it keeps trying to open: reports are lost,
// not queued, while the aggregator is away.
type Reporter struct {
	o    ReporterOptions
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// StartReporter starts reporting.
func StartReporter(o ReporterOptions) *Reporter {
	if o.Every <= 0 {
		o.Every = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reporter{o: o, stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

func (r *Reporter) run() {
	defer close(r.done)
	nc, err := nats.Connect(r.o.URL, append([]nats.Option{
		nats.Name("holdfast " + r.o.NodeID + " status"),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
	}, r.o.Access.Options()...)...)
	if err != nil {
		r.o.Logger.Warn("no status reports to the aggregator", "err", err)
		return
	}
	defer nc.Close()
	subject := StatusSubjectPrefix + cloud.SubjectToken(r.o.NodeID)
	t := time.NewTicker(r.o.Every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		if !nc.IsConnected() {
			continue
		}
		b, err := json.Marshal(r.o.Report())
		if err == nil {
			_ = nc.Publish(subject, b)
		}
	}
}

// Close stops reporting.
func (r *Reporter) Close() error {
	r.once.Do(func() { close(r.stop) })
	<-r.done
	return nil
}
