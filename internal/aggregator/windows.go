package aggregator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/peerwindows"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// siteWindows holds every node's closed windows, read from the window
// results the nodes synced (docs/format/aggregator.md, §3), and answers site
// window queries by merging them: a peerwindows.Source.
type siteWindows struct {
	js   jetstream.JetStream
	log  *slog.Logger
	cons jetstream.Consumer // read by load, then by follow

	mu sync.RWMutex
	// byKey holds, per window, each node's partial. Guarded by mu; a stored
	// partial is never changed, only replaced.
	byKey map[window.Key]map[string]window.Partial
}

// windowsFilter selects the window results of every node.
var windowsFilter = "holdfast.*." + cloud.KindWindows + ".>"

func newSiteWindows(js jetstream.JetStream, log *slog.Logger) *siteWindows {
	return &siteWindows{js: js, log: log.With("component", "windows"), byKey: map[window.Key]map[string]window.Partial{}}
}

// load reads every window result the stream holds, from its beginning.
func (w *siteWindows) load(ctx context.Context) error {
	var err error
	w.cons, err = w.js.OrderedConsumer(ctx, cloud.StreamResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{windowsFilter}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("aggregator: read window results: %w", err)
	}
	for {
		n, pending, err := w.read(ctx, fetchWait)
		if err != nil {
			return fmt.Errorf("aggregator: read window results: %w", err)
		}
		if n == 0 || pending == 0 {
			return nil
		}
	}
}

// follow reads window results as they arrive, until ctx ends.
func (w *siteWindows) follow(ctx context.Context) {
	for ctx.Err() == nil {
		if _, _, err := w.read(ctx, fetchWait); err != nil && ctx.Err() == nil {
			w.log.Warn("reading window results", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// read takes one fetch of window results: how many messages, and how many
// were pending after the last.
func (w *siteWindows) read(ctx context.Context, wait time.Duration) (n int, pending uint64, err error) {
	batch, err := w.cons.Fetch(fetchBatch, jetstream.FetchMaxWait(wait))
	if err != nil {
		return 0, 0, err
	}
	for msg := range batch.Messages() {
		n++
		if meta, err := msg.Metadata(); err == nil {
			pending = meta.NumPending
		}
		w.add(msg)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return n, pending, err
	}
	return n, pending, ctx.Err()
}

// add keeps the window results of one message under their node.
func (w *siteWindows) add(msg jetstream.Msg) {
	node, _, recs, err := records(msg)
	if err != nil {
		w.log.Error("window results not readable; left out of the site windows", "subject", msg.Subject(), "err", err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range recs {
		if r.Type != event.TypeWindow {
			continue
		}
		rec, err := event.DecodeWindow(r.Payload)
		if err != nil {
			w.log.Error("window result not readable; left out of the site windows", "node", node, "offset", r.Offset, "err", err)
			continue
		}
		p, err := peerwindows.FromRecord(&rec)
		if err != nil {
			w.log.Error("window result cannot be merged; left out of the site windows", "node", node, "offset", r.Offset, "err", err)
			continue
		}
		nodes := w.byKey[p.Key]
		if nodes == nil {
			nodes = map[string]window.Partial{}
			w.byKey[p.Key] = nodes
		}
		nodes[node] = p
	}
}

// Partials implements peerwindows.Source: the site's windows for q, each
// the merge of the nodes' partials of it.
func (w *siteWindows) Partials(_ context.Context, q peerwindows.Query) (peerwindows.Page, error) {
	if err := q.Validate(); err != nil {
		return peerwindows.Page{}, err
	}
	byNode := map[string][]window.Partial{}
	w.mu.RLock()
	for k, nodes := range w.byKey {
		if !q.Selects(k) {
			continue
		}
		for node, p := range nodes {
			byNode[node] = append(byNode[node], p)
		}
	}
	w.mu.RUnlock()
	nodes := make([]string, 0, len(byNode))
	for node := range byNode {
		nodes = append(nodes, node)
	}
	slices.Sort(nodes)
	pages := make([]peerwindows.Page, 0, len(nodes))
	for _, node := range nodes {
		ps := byNode[node]
		slices.SortFunc(ps, func(a, b window.Partial) int { return window.CompareKeys(a.Key, b.Key) })
		pg := peerwindows.Page{Partials: ps[:min(len(ps), q.Limit)], More: len(ps) > q.Limit}
		pages = append(pages, pg)
	}
	return peerwindows.Merge(q.Limit, pages...)
}

// count is how many site windows are held.
func (w *siteWindows) count() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.byKey)
}
