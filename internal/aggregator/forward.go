package aggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/uplink"
)

// forwardState is what a forwarder saves (docs/format/aggregator.md, §2):
// every message of the local stream up to Seq is forwarded, and Positions
// are each origin sink's positions at that moment. Both are written in one
// atomic file and read back together.
type forwardState struct {
	Version   int                          `json:"version"`
	Seq       uint64                       `json:"seq"`
	Positions map[string]map[string]uint64 `json:"positions"` // origin node → sink positions
}

const forwardStateVersion = 1

// Limits of one Send and of one wait for the cloud.
const (
	maxSendRecords = 4096
	sendTimeout    = 30 * time.Second
	fetchBatch     = 256
	fetchWait      = 250 * time.Millisecond
)

// forwarder forwards one local JetStream stream to the cloud, message by
// message in sequence order, with one uplink.JetStreamSink per origin node.
type forwarder struct {
	a      *Aggregator
	stream string
	path   string
	log    *slog.Logger

	forwarded prometheus.Counter
	skipped   prometheus.Counter

	// done is the sequence forwarded up to, for the lag (any goroutine).
	done    atomic.Uint64
	lastErr atomic.Pointer[string] // nil: the last attempt went well

	// Used by the forwarding goroutine only (and close, after it ended).
	cur       forwardState // at the last confirmed Send
	dirty     bool         // cur is not saved yet
	lastSave  time.Time
	sinks     map[string]*uplink.JetStreamSink
	resumed   map[string]bool
	closeOnce sync.Once
}

func newForwarder(a *Aggregator, stream string, m *metrics) (*forwarder, error) {
	f := &forwarder{
		a: a, stream: stream, log: a.log.With("component", "forward", "stream", stream),
		path:      filepath.Join(a.o.DataDir, "forward", stream+".json"),
		forwarded: m.forwarded.WithLabelValues(stream),
		skipped:   m.skipped.WithLabelValues(stream),
		sinks:     map[string]*uplink.JetStreamSink{},
		resumed:   map[string]bool{},
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	b, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		f.cur = forwardState{Version: forwardStateVersion}
	case err != nil:
		return nil, fmt.Errorf("aggregator: forwarding state: %w", err)
	default:
		if err := json.Unmarshal(b, &f.cur); err != nil || f.cur.Version != forwardStateVersion {
			return nil, fmt.Errorf("aggregator: forwarding state %s is damaged or of another version (%v); "+
				"removing it makes the aggregator look in the cloud for everything again, storing nothing twice", f.path, err)
		}
	}
	if f.cur.Positions == nil {
		f.cur.Positions = map[string]map[string]uint64{}
	}
	f.done.Store(f.cur.Seq)
	return f, nil
}

// save writes cur atomically.
func (f *forwarder) save() error {
	b, err := json.Marshal(f.cur)
	if err != nil {
		return err
	}
	if err := vfs.WriteAtomic(vfs.OS, f.path, b); err != nil {
		return fmt.Errorf("save forwarding state: %w", err)
	}
	f.dirty, f.lastSave = false, time.Now()
	return nil
}

// run forwards until ctx ends: after start and after every failure, every
// origin sink resumes from the saved state and reading starts again after
// the saved sequence.
func (f *forwarder) run(ctx context.Context) {
	bo := uplink.NewBackoff(f.a.o.retry)
	defer func() {
		if f.dirty {
			if err := f.save(); err != nil {
				f.log.Error("forwarding state not saved at shutdown; a restart looks in the cloud for what follows the last save", "err", err)
			}
		}
	}()
	for ctx.Err() == nil {
		err := f.pass(ctx, bo)
		if ctx.Err() != nil {
			return
		}
		msg := err.Error()
		f.lastErr.Store(&msg)
		if f.dirty {
			if serr := f.save(); serr != nil {
				f.log.Error("forwarding state not saved", "err", serr)
			}
		}
		clear(f.resumed)
		wait := bo.Next()
		f.log.Warn("forwarding failed; retrying", "err", err, "wait", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// group is consecutive messages of one origin node and lane whose records
// ascend: one Send.
type group struct {
	node    string
	lane    uplink.Lane
	recs    []uplink.Record
	lastSeq uint64
}

// pass reads the stream after the saved sequence and forwards it until an
// error or ctx ends.
func (f *forwarder) pass(ctx context.Context, bo *uplink.Backoff) error {
	cons, err := f.a.js.OrderedConsumer(ctx, f.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: f.cur.Seq + 1,
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", f.stream, err)
	}
	var g group
	flush := func() error {
		if len(g.recs) == 0 {
			return nil
		}
		if err := f.send(ctx, &g); err != nil {
			return err
		}
		f.lastErr.Store(nil)
		bo.Reset()
		g = group{}
		return nil
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(fetchBatch, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			return fmt.Errorf("read %s: %w", f.stream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("read %s: %w", f.stream, err)
			}
			node, lane, recs, err := records(msg)
			if err != nil {
				// Not a node's batch: it cannot be forwarded as one. Counted
				// and logged, and passed over.
				f.skipped.Inc()
				f.log.Error("message is not a holdfast batch; not forwarded", "seq", meta.Sequence.Stream, "subject", msg.Subject(), "err", err)
				if len(g.recs) == 0 {
					f.cur.Seq, f.dirty = meta.Sequence.Stream, true
					f.done.Store(f.cur.Seq)
				}
				continue
			}
			if len(g.recs) > 0 && (g.node != node || g.lane != lane || recs[0].Offset <= g.recs[len(g.recs)-1].Offset ||
				len(g.recs)+len(recs) > maxSendRecords) {
				if err := flush(); err != nil {
					return err
				}
			}
			g.node, g.lane, g.lastSeq = node, lane, meta.Sequence.Stream
			g.recs = append(g.recs, recs...)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("read %s: %w", f.stream, err)
		}
		if err := flush(); err != nil {
			return err
		}
		if f.dirty && (n == 0 || time.Since(f.lastSave) >= f.a.o.saveEvery) {
			if err := f.save(); err != nil {
				return err
			}
		}
	}
	return nil
}

// records decodes a batch message of a node.
func records(msg jetstream.Msg) (node string, lane uplink.Lane, recs []uplink.Record, err error) {
	node, _, stream, err := cloud.ParseSubject(msg.Subject())
	if err != nil {
		return "", 0, nil, err
	}
	if lane, err = uplink.ParseLane(msg.Headers().Get(cloud.HeaderLane)); err != nil {
		return "", 0, nil, err
	}
	brs, err := cloud.DecodeBatch(msg.Headers(), msg.Data())
	if err != nil {
		return "", 0, nil, err
	}
	recs = make([]uplink.Record, len(brs))
	for i, br := range brs {
		recs[i] = uplink.Record{Offset: br.Offset, Type: br.Payload[0], Stream: stream, Lane: lane, Payload: br.Payload}
	}
	return node, lane, recs, nil
}

// send forwards g through its origin node's sink, resumed first if it has
// not been since the last failure; on success g's messages count as
// forwarded.
func (f *forwarder) send(ctx context.Context, g *group) error {
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	s := f.sinks[g.node]
	if s == nil {
		s = uplink.NewJetStreamSink(uplink.JetStreamOptions{
			URL: f.a.o.CloudURL, NodeID: g.node, Name: "forward", Access: f.a.o.CloudAccess,
			Logger: f.log.With("origin", g.node),
		})
		f.sinks[g.node] = s
	}
	if !f.resumed[g.node] {
		// No lane cursors: every record found in the cloud counts as
		// stored, whoever stored it.
		if err := s.Resume(ctx, map[uplink.Lane]uint64{}, f.cur.Positions[g.node]); err != nil {
			return err
		}
		f.resumed[g.node] = true
	}
	if err := s.Send(ctx, g.recs); err != nil {
		return fmt.Errorf("forward %d records of %s: %w", len(g.recs), g.node, err)
	}
	f.cur.Seq = g.lastSeq
	// A subject the sink has not published on since it resumed keeps its
	// saved position.
	pos := maps.Clone(f.cur.Positions[g.node])
	if pos == nil {
		pos = map[string]uint64{}
	}
	maps.Copy(pos, s.Positions())
	f.cur.Positions[g.node] = pos
	f.dirty = true
	f.done.Store(g.lastSeq)
	f.forwarded.Add(float64(len(g.recs)))
	return nil
}

// lag is how many messages of the local stream are not forwarded yet.
func (f *forwarder) lag() uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := f.a.js.Stream(ctx, f.stream)
	if err != nil {
		return 0
	}
	last := st.CachedInfo().State.LastSeq
	return last - min(last, f.done.Load())
}

// err is the last forwarding error, "" after a success.
func (f *forwarder) err() string {
	if p := f.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

func (f *forwarder) close() {
	f.closeOnce.Do(func() {
		for _, s := range f.sinks {
			_ = s.Close()
		}
	})
}
