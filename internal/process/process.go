// Package process turns the log into answers: it reads every record in offset
// order, feeds events to windowing and alert rules on worker goroutines (each
// owning whole streams), and writes what they produce — window results, alerts,
// late marks — back to the log as records, then hands alerts to the notifiers.
// Ingest never waits for it.
//
// Determinism is what makes it crash-safe. Window closes, late decisions and
// alerts are a function of the log's contents in offset order: the watermark
// comes from the events before a record, and a quiet stream's wall-clock idle
// timeout takes effect through a watermark record written to the log, so it
// lands at the same place on every replay. After a restart the processor replays
// the log; what it produces for the part written before the restart is matched
// against the records already there and only the missing ones are written. No
// result is written twice and none is lost. Checkpoints (a later change) will
// shorten the replay; they will not change its outcome.
package process

import (
	"context"
	"errors"
	"hash/maphash"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Options configure a Processor. Zero fields take the defaults.
type Options struct {
	Window      window.Options // OnClose is set by the processor
	Rules       []alert.Rule
	Workers     int           // default GOMAXPROCS
	IdleTimeout time.Duration // a stream quiet this long (wall clock) has its windows closed; default 1m
	// FlushInterval bounds how long an output waits to be batched; default 20ms.
	FlushInterval time.Duration
	Dispatcher    *alert.Dispatcher // nil: alerts are recorded, not notified
	Logger        *slog.Logger
	Metrics       *Metrics
	now           func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = time.Minute
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = 20 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// Processor is the running stream processor.
type Processor struct {
	opts   Options
	store  *store.Store
	log    *buffer.Log
	seed   maphash.Seed
	work   []*worker
	out    chan []store.Output
	cancel context.CancelFunc
	wg     sync.WaitGroup

	replayEnd uint64        // records below it were written before this start
	lateness  time.Duration // the windows' effective allowed lateness

	lateMu   sync.Mutex
	seenLate map[uint64]struct{} // guarded by lateMu; late marks found while replaying

	alertsMu sync.RWMutex
	alerts   map[string]alert.Alert // guarded by alertsMu; newest state of each alert
	alertIDs []string               // guarded by alertsMu; insertion order, for bounding
}

// maxAlertHistory bounds the alerts kept in memory for queries.
const maxAlertHistory = 10_000

// New prepares a processor over a store.
func New(s *store.Store, opts Options) (*Processor, error) {
	opts = opts.withDefaults()
	if err := alert.ValidateRules(opts.Rules); err != nil {
		return nil, err
	}
	p := &Processor{
		opts:     opts,
		store:    s,
		log:      s.Log(),
		seed:     maphash.MakeSeed(),
		out:      make(chan []store.Output, 64),
		seenLate: map[uint64]struct{}{},
		alerts:   map[string]alert.Alert{},
	}
	switch p.lateness = opts.Window.AllowedLateness; p.lateness {
	case 0:
		p.lateness = window.DefaultAllowedLateness
	case window.NoLateness:
		p.lateness = 0
	}
	for i := range opts.Workers {
		w, err := newWorker(p, i)
		if err != nil {
			return nil, err
		}
		p.work = append(p.work, w)
	}
	return p, nil
}

// Start replays the log and then follows it, until Close.
func (p *Processor) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.replayEnd = p.log.DurableOffset()
	p.opts.Logger.Info("processor replaying log", "from", p.log.FirstOffset(), "to", p.replayEnd,
		"workers", len(p.work))
	var producers sync.WaitGroup
	producers.Add(1 + len(p.work))
	go func() { defer producers.Done(); p.read(ctx) }()
	for _, w := range p.work {
		go func() { defer producers.Done(); w.run() }()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		go func() { producers.Wait(); close(p.out) }()
		p.write()
	}()
}

// Close stops reading, lets the workers finish what they hold and writes their
// outputs. Outputs not written are produced again by the next replay.
func (p *Processor) Close() error {
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	p.wg.Wait()
	return nil
}

func (p *Processor) workerFor(stream string) *worker {
	return p.work[maphash.String(p.seed, stream)%uint64(len(p.work))]
}

// read is the one goroutine reading the log: it routes each record to the
// worker owning its stream, in batches.
func (p *Processor) read(ctx context.Context) {
	defer func() {
		for _, w := range p.work {
			close(w.in)
		}
	}()
	r := p.log.NewReader(0)
	defer r.Close()
	batches := make([][]item, len(p.work))
	flush := func() bool {
		for i, b := range batches {
			if len(b) == 0 {
				continue
			}
			select {
			case p.work[i].in <- b:
			case <-ctx.Done():
				return false
			}
			batches[i] = make([]item, 0, 256)
		}
		return true
	}
	names := [2]*interner{newInterner(), newInterner()} // streams, devices
	var route router
	replaying := true
	next := uint64(0)
	for {
		if replaying && next >= p.replayEnd {
			replaying = false
			if !flush() {
				return
			}
			for _, w := range p.work {
				select {
				case w.in <- []item{{kind: kindReplayDone}}:
				case <-ctx.Done():
					return
				}
			}
			p.opts.Logger.Info("processor caught up with the log", "offset", next)
		}
		off, payload, err := r.Next()
		if errors.Is(err, io.EOF) {
			if !flush() {
				return
			}
			if next > 0 {
				for _, w := range p.work {
					select {
					case w.in <- []item{{kind: kindPosition, off: next - 1}}:
					case <-ctx.Done():
						return
					}
				}
			}
			if err := p.log.WaitDurable(ctx, next+1); err != nil {
				if ctx.Err() == nil {
					p.opts.Logger.Error("processor stopped: log unavailable", "err", err)
				}
				return
			}
			continue
		}
		if err != nil {
			// Damage found while reading: it was not there when the log was
			// opened. Stop rather than skip; the next open quarantines it.
			p.opts.Logger.Error("processor stopped at a damaged record", "err", err)
			return
		}
		next = off + 1
		it, ok := p.decode(off, payload, names, off < p.replayEnd)
		if !ok {
			continue
		}
		i := route.worker(p, it.stream)
		batches[i] = append(batches[i], it)
		if len(batches[i]) >= 256 && !flush() {
			return
		}
	}
}

// decode turns a record into a work item; ok is false for records no worker
// needs.
func (p *Processor) decode(off uint64, payload []byte, names [2]*interner, replay bool) (item, bool) {
	it := item{off: off, kind: event.Type(payload)}
	switch it.kind {
	case event.TypeEvent:
		v, ok := event.Peek(payload)
		if !ok {
			return it, false
		}
		it.stream, it.device = names[0].get(v.Stream), names[1].get(v.DeviceID)
		it.ts, it.value = v.TS, v.Value
	case event.TypeWindow:
		w, err := event.DecodeWindow(payload)
		if err != nil || !replay {
			return it, false // live: the worker wrote it and knows
		}
		it.stream, it.id = w.Stream, w.ID()
	case event.TypeAlert:
		a, err := event.DecodeAlert(payload)
		if err != nil {
			return it, false
		}
		if !replay {
			return it, false // live: the worker wrote it and knows
		}
		it.stream, it.id = a.Stream, alertKey(a.ID(), a.Firing)
	case event.TypeWatermark:
		wm, err := event.DecodeWatermark(payload)
		if err != nil {
			return it, false
		}
		it.stream, it.ts = wm.Stream, wm.Watermark
	case event.TypeLate:
		if replay {
			if offs, err := event.DecodeLate(payload); err == nil {
				p.lateMu.Lock()
				for _, o := range offs {
					p.seenLate[o] = struct{}{}
				}
				p.lateMu.Unlock()
			}
		}
		return it, false
	default:
		return it, false
	}
	return it, true
}

func alertKey(id string, firing bool) string {
	if firing {
		return id + "#firing"
	}
	return id + "#resolved"
}

// write is the one goroutine appending outputs: it batches what the workers
// produce, appends it, then notifies alerts that are now durable.
func (p *Processor) write() {
	var pending []store.Output
	ticker := time.NewTicker(p.opts.FlushInterval)
	defer ticker.Stop()
	flush := func() {
		if len(pending) == 0 {
			return
		}
		if _, err := p.store.AppendOutputs(pending); err != nil {
			// The log has failed; the outputs are produced again on replay.
			p.opts.Logger.Error("processor could not write outputs", "records", len(pending), "err", err)
			pending = pending[:0]
			return
		}
		for _, o := range pending {
			switch {
			case o.Window != nil:
				p.opts.Metrics.WindowsClosed.Inc()
			case o.Alert != nil:
				p.opts.Metrics.Alerts.WithLabelValues(o.Alert.Severity, stateOf(o.Alert)).Inc()
				if p.opts.Dispatcher != nil {
					p.opts.Dispatcher.Send(toAlert(o.Alert))
				}
			}
		}
		pending = pending[:0]
	}
	for {
		select {
		case outs, ok := <-p.out:
			if !ok {
				flush()
				return
			}
			pending = append(pending, outs...)
			if len(pending) >= 1024 {
				flush()
			}
		case <-ticker.C:
			flush()
		}
	}
}

func stateOf(a *event.AlertRecord) string {
	if a.Firing {
		return string(alert.Firing)
	}
	return string(alert.Resolved)
}

// recordAlert keeps an alert's newest state for queries.
func (p *Processor) recordAlert(a alert.Alert) {
	p.alertsMu.Lock()
	defer p.alertsMu.Unlock()
	if _, ok := p.alerts[a.ID]; !ok {
		p.alertIDs = append(p.alertIDs, a.ID)
		if len(p.alertIDs) > maxAlertHistory {
			old := p.alertIDs[0]
			p.alertIDs = p.alertIDs[1:]
			if p.alerts[old].State != alert.Firing {
				delete(p.alerts, old)
			} else {
				p.alertIDs = append(p.alertIDs, old) // never forget a firing alert
			}
		}
	}
	p.alerts[a.ID] = a
}

// Alerts returns alerts matching state and severity ("" matches all), newest
// fired first.
func (p *Processor) Alerts(state, severity string) []alert.Alert {
	p.alertsMu.RLock()
	defer p.alertsMu.RUnlock()
	var out []alert.Alert
	for i := len(p.alertIDs) - 1; i >= 0; i-- {
		a := p.alerts[p.alertIDs[i]]
		if (state == "" || string(a.State) == state) && (severity == "" || string(a.Severity) == severity) {
			out = append(out, a)
		}
	}
	return out
}

// Open returns partial results of open windows; see window.Engine.Open.
func (p *Processor) Open(stream, device string, size time.Duration, from, to int64) []window.Result {
	var out []window.Result
	for _, w := range p.work {
		if stream != "" && w != p.workerFor(stream) {
			continue
		}
		w.mu.Lock()
		for _, s := range w.streamList(stream) {
			out = append(out, w.win.Open(s, device, size, from, to)...)
		}
		w.mu.Unlock()
	}
	return out
}

// Status describes the processor for /v1/status.
type Status struct {
	Replaying   bool              `json:"replaying"`
	Processed   uint64            `json:"processed_offset"`
	Lag         uint64            `json:"lag_records"`
	OpenWindows int               `json:"open_windows"`
	Late        map[string]uint64 `json:"late_events"`
	Firing      int               `json:"alerts_firing"`
}

// Status reports progress and state.
func (p *Processor) Status() Status {
	s := Status{Late: map[string]uint64{}}
	first := true
	for _, w := range p.work {
		w.mu.Lock()
		if first || w.processed < s.Processed {
			s.Processed = w.processed
		}
		first = false
		s.Replaying = s.Replaying || !w.live
		s.OpenWindows += w.win.OpenWindows()
		for st := range w.streams {
			if n := w.win.Late(st); n > 0 {
				s.Late[st] = n
			}
		}
		w.mu.Unlock()
	}
	if d := p.log.DurableOffset(); d > s.Processed {
		s.Lag = d - s.Processed
	}
	s.Firing = len(p.Alerts(string(alert.Firing), ""))
	return s
}

// router remembers the last stream routed: consecutive records of one stream
// are the common case and skip the hash.
type router struct {
	stream string
	i      uint64
	ok     bool
}

func (r *router) worker(p *Processor, stream string) uint64 {
	if !r.ok || stream != r.stream {
		r.stream, r.i, r.ok = stream, maphash.String(p.seed, stream)%uint64(len(p.work)), true
	}
	return r.i
}

// interner keeps one copy of each device and stream name.
type interner struct {
	m    map[string]string
	last string // the name returned last: names repeat from record to record
}

func newInterner() *interner { return &interner{m: map[string]string{}} }

func (in *interner) get(b []byte) string {
	if string(b) == in.last {
		return in.last
	}
	if s, ok := in.m[string(b)]; ok {
		in.last = s
		return s
	}
	if len(in.m) > 1<<20 {
		clear(in.m) // bound memory with unbounded device churn
	}
	s := string(b)
	in.m[s] = s
	in.last = s
	return s
}

// toAlert rebuilds the alert a record describes, for the notifiers.
func toAlert(r *event.AlertRecord) alert.Alert {
	a := alert.Alert{
		ID: r.ID(), Rule: r.Rule, Severity: alert.Severity(r.Severity), State: alert.Resolved,
		Stream: r.Stream, DeviceID: r.DeviceID, Value: r.Value, Threshold: r.Threshold,
		FiredAt: r.FiredAt, ResolvedAt: r.ResolvedAt,
	}
	if r.Firing {
		a.State = alert.Firing
	}
	return a
}
