package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
)

// The primary's side of an HA pair inside the node (docs/ARCHITECTURE.md,
// "High availability"): every write is fenced by the term, acknowledgements
// wait for the standby in sync mode, and sinks see only what the standby
// holds, so that whatever the cloud has survives a takeover.

// errNotPrimary refuses writes on a node that is not the current term's
// primary; transports answer it as storage unavailable (HTTP 503, MQTT no
// ack), so the device tries again, at the primary.
var errNotPrimary = fmt.Errorf("%w: this node is not the pair's primary", ingest.ErrUnavailable)

// fence is what the node needs of the pair's leadership: the term while this
// member is primary with a lease in force.
type fence interface {
	Fence() (term uint64, ok bool)
}

// replicator is what the node needs of the log's replication source.
type replicator interface {
	// Replicated says which standby holds every record below next, durably,
	// and when it last asked for more.
	Replicated() (member string, next uint64, lastContact time.Time)
	// WaitReplicated returns once the standby holds every record below off.
	WaitReplicated(ctx context.Context, off uint64) error
}

// fencedEngine refuses every append (events, derived records, ledger
// entries) unless this member is primary in term.
type fencedEngine struct {
	buffer.Engine
	fence fence
	term  uint64
	// refused is called when an append is refused: the processor drops
	// outputs it cannot write (a restart replays them), so a primary that
	// lost its lease even for a moment starts its mode again.
	refused func()
}

func (e *fencedEngine) Append(payloads ...[]byte) (uint64, error) {
	if t, ok := e.fence.Fence(); !ok || t != e.term {
		if e.refused != nil {
			e.refused()
		}
		return 0, errNotPrimary
	}
	return e.Engine.Append(payloads...)
}

// boundedEngine is the log as the sinks see it while the pair has a standby:
// only records the standby holds, so nothing reaches the cloud that a
// takeover could lose (and its offsets be written again, with other records,
// by the new primary).
type boundedEngine struct {
	buffer.Engine
	limit func() uint64 // records below it may go out
	wait  func(ctx context.Context, off uint64) error
}

func (e *boundedEngine) DurableOffset() uint64 { return min(e.Engine.DurableOffset(), e.limit()) }

func (e *boundedEngine) WaitDurable(ctx context.Context, off uint64) error {
	if err := e.Engine.WaitDurable(ctx, off); err != nil {
		return err
	}
	return e.wait(ctx, off)
}

func (e *boundedEngine) NewReader(from uint64) buffer.RecordReader {
	return &boundedReader{RecordReader: e.Engine.NewReader(from), limit: e.limit}
}

// boundedReader ends (io.EOF) at the limit. The record it read past the
// limit is kept (copied: the inner reader reuses its buffer) and returned
// first once the limit allows; every other record goes through uncopied.
type boundedReader struct {
	buffer.RecordReader
	limit   func() uint64
	held    bool
	off     uint64
	payload []byte
}

func (r *boundedReader) Next() (uint64, []byte, error) {
	if r.held {
		if r.off >= r.limit() {
			return 0, nil, io.EOF
		}
		r.held = false
		return r.off, r.payload, nil
	}
	off, p, err := r.RecordReader.Next()
	if err != nil {
		return off, p, err
	}
	if off >= r.limit() {
		r.off, r.payload, r.held = off, append(r.payload[:0], p...), true
		return 0, nil, io.EOF
	}
	return off, p, nil
}

func (r *boundedReader) Position() uint64 {
	if r.held {
		return r.off
	}
	return r.RecordReader.Position()
}

func (r *boundedReader) SetMark(m *atomic.Uint64) {
	if mk, ok := r.RecordReader.(buffer.Marker); ok {
		mk.SetMark(m)
	} else {
		m.Store(math.MaxUint64)
	}
}

// pairGate follows the standby from the primary's side. It is alone (acks
// and sinks go on without a standby) until a standby has nearly caught up;
// then it joins: sinks and, in sync mode, acks wait for the standby, and once
// the standby holds everything durable when joining started, the leader
// record names it as the member that may take over. A standby silent for
// sync_timeout, or one that holds acks waiting without moving for that long,
// makes it alone again, after the
// leader record says so. So the standby a takeover may promote holds every
// acknowledged record (sync) and every record any sink has seen (both modes).
type pairGate struct {
	buf     buffer.Engine
	src     replicator
	fence   fence
	term    uint64
	setSB   func(ctx context.Context, member string) error // records the eligible standby in the leader record
	sync    bool
	timeout time.Duration
	maxLag  uint64
	log     *slog.Logger
	alerts  func() *alert.Dispatcher
	metrics *haMetrics
	joinLag uint64 // how close a standby must be to join; 0: defaultJoinLag

	mu       sync.Mutex
	state    gateState
	member   string    // the standby joining or eligible
	joinAt   uint64    // joining: the durable offset when it began
	joinedAt time.Time // joining: when it began
	lastNext uint64    // the standby's position at the last step
	// dropped is where the standby stood when it was last dropped; it may
	// join again only once it has moved past it, so a standby that answers
	// but cannot write does not hold acks up again and again.
	dropped    uint64
	wasDropped bool
	// aloneSince is when the gate last became alone (its start, at first):
	// alone longer than aloneAlert raises ha-standby-lost too, for a
	// standby that never came, or a primary that started again without it.
	aloneSince time.Time
	stalled    time.Time // since when acks wait and the standby has not moved
	firing     *haFiring // the pair's firing alerts, kept across modes
	started    time.Time // when this primary mode began
	waiters    atomic.Int64
}

type gateState int32

const (
	gateAlone gateState = iota
	gateJoining
	gatePaired
)

func (s gateState) String() string {
	return [...]string{"alone", "joining", "paired"}[s]
}

// defaultJoinLag is how close (in records) a standby must be before the
// primary starts waiting for it: joining then takes a moment, not the whole
// catch-up.
const defaultJoinLag = 10_000

func (g *pairGate) waiting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state != gateAlone
}

// limit is what the sinks may read below.
func (g *pairGate) limit() uint64 {
	if !g.waiting() {
		return math.MaxUint64
	}
	_, next, _ := g.src.Replicated()
	return next
}

// waitLimit waits until the sinks may read off-1.
func (g *pairGate) waitLimit(ctx context.Context, off uint64) error {
	return g.waitFor(ctx, off, false)
}

// waitAck holds an acknowledgement until the standby has every record below
// off (sync mode), or in async mode until it is no more than maxLag records
// behind off: that bounds the lag, and what a takeover can lose, by
// ha.max_lag. Alone, nothing waits.
func (g *pairGate) waitAck(ctx context.Context, off uint64) error {
	target := off
	if !g.sync {
		if g.maxLag == 0 || off <= g.maxLag {
			return nil
		}
		target = off - g.maxLag
	}
	g.waiters.Add(1)
	defer g.waiters.Add(-1)
	return g.waitFor(ctx, target, true)
}

// waitFor waits until limit reaches off; fenced, it gives up as soon as this
// member no longer holds its term.
func (g *pairGate) waitFor(ctx context.Context, off uint64, fenced bool) error {
	for {
		if g.limit() >= off {
			return nil
		}
		if t, ok := g.fence.Fence(); fenced && (!ok || t != g.term) {
			return errNotPrimary
		}
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := g.src.WaitReplicated(wctx, off)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			return nil
		}
	}
}

// run moves between alone, joining and paired until ctx ends.
func (g *pairGate) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.step(ctx)
	}
}

func (g *pairGate) step(ctx context.Context) {
	member, next, contact := g.src.Replicated()
	durable := g.buf.DurableOffset()
	lag := durable - min(next, durable)
	g.metrics.lag.Set(float64(lag))
	now := time.Now()
	if contact.Before(g.started) {
		contact = g.started // a gate just started gives the standby its timeout to call
	}
	silent := member == "" || now.Sub(contact) > g.timeout
	g.mu.Lock()
	// Stalled: acks wait and the standby holds no more than a step ago.
	if g.waiters.Load() > 0 && next < durable && next == g.lastNext {
		if g.stalled.IsZero() {
			g.stalled = now
		}
	} else {
		g.stalled = time.Time{}
	}
	g.lastNext = next
	state, joinAt, joinedAt, stalled := g.state, g.joinAt, g.joinedAt, g.stalled
	g.mu.Unlock()
	switch state {
	case gateAlone:
		g.mu.Lock()
		if g.aloneSince.IsZero() {
			g.aloneSince = now
		}
		aloneFor := now.Sub(g.aloneSince)
		g.mu.Unlock()
		if aloneFor > 3*g.timeout {
			g.fireLost(member, now)
		}
		joinLag := g.joinLag
		if joinLag == 0 {
			joinLag = defaultJoinLag
		}
		g.mu.Lock()
		moved := !g.wasDropped || next > g.dropped
		g.mu.Unlock()
		if !silent && lag <= joinLag && moved {
			g.mu.Lock()
			g.state, g.member, g.joinAt, g.joinedAt = gateJoining, member, g.buf.DurableOffset(), now
			g.mu.Unlock()
			g.log.Info("standby caught up: waiting for it to hold everything before it may take over", "standby", member, "lag_records", lag)
		}
	case gateJoining:
		switch {
		case silent || now.Sub(joinedAt) > g.timeout:
			g.drop(next, !silent)
		case next >= joinAt:
			if err := g.setSB(ctx, member); err != nil {
				g.log.Warn("cannot record the standby in the leader record; trying again", "standby", member, "err", err)
				return
			}
			g.setState(gatePaired, member)
			g.log.Info("standby holds every record: it may take over", "standby", member)
			g.resolveLost()
		}
	case gatePaired:
		stalledFor := time.Duration(0)
		if !stalled.IsZero() {
			stalledFor = now.Sub(stalled)
		}
		if silent || stalledFor > g.timeout {
			// Alone only once the leader record says the standby may not
			// take over: until then acks keep waiting (and the lease runs
			// out if the quorum is gone too).
			if err := g.setSB(ctx, ""); err != nil {
				g.log.Warn("standby lost, and the leader record cannot say so yet: acknowledgements wait", "err", err)
				return
			}
			g.drop(next, !silent)
			g.log.Warn("standby lost: acknowledging without it; it may not take over until it has caught up again",
				"standby", member, "silent_for", now.Sub(contact).Round(time.Millisecond), "replication", map[bool]string{true: "sync", false: "async"}[g.sync])
			g.fireLost(member, now)
		}
	}
	g.checkLag(lag, now)
}

// drop makes the primary alone, the standby having stood at next. A standby
// dropped while it still answered (stalled) must move before it may join
// again; one dropped for silence may as soon as it answers.
func (g *pairGate) drop(next uint64, stalled bool) {
	g.mu.Lock()
	g.dropped, g.wasDropped = next, stalled
	g.mu.Unlock()
	g.setState(gateAlone, "")
}

func (g *pairGate) setState(s gateState, member string) {
	g.mu.Lock()
	if s == gateAlone && g.state != gateAlone {
		g.aloneSince = time.Now()
	}
	g.state, g.member = s, member
	g.mu.Unlock()
	g.metrics.paired.Set(map[bool]float64{true: 1, false: 0}[s == gatePaired])
}

func (g *pairGate) status() (state gateState, member string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state, g.member
}

func (g *pairGate) fireLost(member string, now time.Time) {
	d := g.alerts()
	g.firing.mu.Lock()
	defer g.firing.mu.Unlock()
	if g.firing.lost != "" {
		return // firing already
	}
	g.metrics.standbyLost.Inc()
	if d == nil {
		return
	}
	g.firing.lost = fmt.Sprintf("ha-standby-lost/%d", now.UnixMilli())
	d.Send(alert.Alert{ID: g.firing.lost, Rule: "ha-standby-lost", Severity: alert.Critical, State: alert.Firing,
		Stream: "*", DeviceID: member, FiredAt: now.UnixMilli()})
}

func (g *pairGate) resolveLost() {
	d := g.alerts()
	g.firing.mu.Lock()
	defer g.firing.mu.Unlock()
	if d == nil || g.firing.lost == "" {
		return
	}
	now := time.Now().UnixMilli()
	d.Send(alert.Alert{ID: g.firing.lost, Rule: "ha-standby-lost", Severity: alert.Critical, State: alert.Resolved,
		Stream: "*", FiredAt: now, ResolvedAt: now})
	g.firing.lost = ""
}

func (g *pairGate) checkLag(lag uint64, now time.Time) {
	d := g.alerts()
	if d == nil || g.maxLag == 0 {
		return
	}
	g.firing.mu.Lock()
	defer g.firing.mu.Unlock()
	switch {
	case lag > g.maxLag && g.firing.lag == "":
		g.firing.lag = fmt.Sprintf("ha-replication-lag/%d", now.UnixMilli())
		d.Send(alert.Alert{ID: g.firing.lag, Rule: "ha-replication-lag", Severity: alert.Warning, State: alert.Firing,
			Stream: "*", Value: float64(lag), Threshold: float64(g.maxLag), FiredAt: now.UnixMilli()})
	case lag <= g.maxLag/2 && g.firing.lag != "":
		d.Send(alert.Alert{ID: g.firing.lag, Rule: "ha-replication-lag", Severity: alert.Warning, State: alert.Resolved,
			Stream: "*", Value: float64(lag), Threshold: float64(g.maxLag), FiredAt: now.UnixMilli(), ResolvedAt: now.UnixMilli()})
		g.firing.lag = ""
	}
}

// haFiring holds the ids of the pair's firing alerts. It belongs to the
// Pair, not to one primary mode, so that a mode started again (a lapsed
// lease) resolves what the one before it fired.
type haFiring struct {
	mu   sync.Mutex
	lost string // "ha-standby-lost"
	lag  string // "ha-replication-lag"
}

// fencedAppender is ingest's store on a primary (which writes through the
// fenced engine, so only in the term): it holds the ack for the standby, and
// acknowledges only if the term still holds once the events are durable on
// both.
type fencedAppender struct {
	inner ingest.Appender
	buf   buffer.Engine
	fence fence
	term  uint64
	gate  *pairGate
}

func (a *fencedAppender) Append(ctx context.Context, evs []event.Event) (ingest.Result, error) {
	// The store appends through the fenced engine: nothing is written
	// outside the term. What is left is to hold the ack.
	res, err := a.inner.Append(ctx, evs)
	if err != nil {
		return res, err
	}
	if err := a.gate.waitAck(ctx, a.buf.DurableOffset()); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return res, fmt.Errorf("%w: waiting for the standby: %v", ingest.ErrUnavailable, err)
		}
		return res, err
	}
	if t, ok := a.fence.Fence(); !ok || t != a.term {
		return ingest.Result{}, errNotPrimary
	}
	return res, nil
}
