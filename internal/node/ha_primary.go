package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/leader"
	"github.com/holdfast-edge/holdfast/internal/replica"
)

// startPrimary makes n the pair's primary in its term, once the buffer is
// open: the replication source serves the standby, the gate follows it, and
// every writer appends through the fence.
func (n *Node) startPrimary() error {
	ph, p := n.pair, n.pair.pair
	fence := p.lead.Load()
	src, err := replica.NewSource(p.member.Conn(), replicationSubject, n.buf, replica.SourceOptions{
		NodeID: n.cfg.NodeID,
		Term: func() (uint64, bool) {
			t, ok := fence.Fence()
			return t, ok && t == ph.term
		},
		DataDir: n.cfg.DataDir, Files: replicatedFiles, OnReport: n.reportToLedger,
		Logger: n.log.With("component", "replica"), Registerer: n.reg,
	})
	if err != nil {
		return err
	}
	ph.src = src
	h := n.cfg.HA
	ph.gate = &pairGate{
		buf: n.buf, src: src, fence: fence, term: ph.term,
		setSB:   fence.SetStandby,
		sync:    h.Replication == "sync",
		timeout: h.SyncTimeout, maxLag: h.MaxLag,
		log:     n.log.With("component", "ha"),
		alerts:  func() *alert.Dispatcher { return n.disp },
		metrics: p.m,
		firing:  &p.firing,
	}
	ph.gate.started = time.Now()
	// A primary that starts again in its own term (a lapsed lease, a quick
	// restart) may find its standby still named as the one that may take
	// over: until the leader record says otherwise, acks and sinks wait for
	// it, or a takeover could promote a standby without what was acked.
	if rec := fence.State().Record; rec.Standby != "" {
		ph.gate.state, ph.gate.member = gatePaired, rec.Standby
		p.m.paired.Set(1)
	}
	n.wbuf = &fencedEngine{Engine: n.buf, fence: fence, term: ph.term, refused: func() {
		if ph.lapsed.CompareAndSwap(false, true) {
			p.poke()
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	ph.stop = cancel
	every := h.Heartbeat / 4
	go ph.gate.run(ctx, every)
	return nil
}

// appender is what ingest stores through: the store, fenced on a primary.
func (n *Node) appender() ingest.Appender {
	if n.cfg.Site.Enabled() {
		return &siteAppender{inner: n.store, n: n}
	}
	if n.pair == nil {
		return n.store
	}
	return &fencedAppender{inner: n.store, buf: n.buf, fence: n.pair.pair.lead.Load(), term: n.pair.term, gate: n.pair.gate}
}

// brokerRedirect is the embedded broker's Redirect on a primary (nil
// outside a pair): devices go to the new primary once the lease is gone.
func (n *Node) brokerRedirect() func() (string, bool) {
	if n.pair == nil {
		return nil
	}
	return n.mqttRedirect
}

// brokerOwner is the embedded broker's Owner in a site (nil outside one).
func (n *Node) brokerOwner() func(string) (string, bool) {
	if !n.cfg.Site.Enabled() {
		return nil
	}
	return n.mqttOwner
}

// syncLog is the log as the sinks read it: bounded by the standby on a
// primary.
func (n *Node) syncLog() buffer.Engine {
	if n.pair == nil {
		return n.buf
	}
	return &boundedEngine{Engine: n.buf, limit: n.pair.gate.limit, wait: n.pair.gate.waitLimit}
}

// stepDown serves POST /v1/ha/step-down, a planned switchover: this primary
// stops taking writes and hands the term to its standby at once (the
// standby must be the one that may take over: 409 otherwise). Admin role.
func (n *Node) stepDown(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	lead := n.pair.pair.lead.Load()
	err := lead.StepDown(ctx)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case err == nil:
		n.log.Warn("stepped down on request: the standby takes over", "term", n.pair.term)
		_ = json.NewEncoder(w).Encode(map[string]any{"stepped_down": true, "term": n.pair.term})
	case errors.Is(err, leader.ErrNoStandby):
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "no standby may take over yet (it is catching up, or gone): not stepping down"})
	default:
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "step-down failed: " + err.Error()})
	}
}
