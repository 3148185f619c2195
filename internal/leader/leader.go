// Package leader decides which node of an HA pair is primary: compare-and-set
// on the leader record in the pair's replicated bucket (internal/hacluster),
// fenced by a term and a lease. The record and its rules are specified in
// docs/format/ha.md; this package is their implementation.
//
// A primary renews the record every Heartbeat and holds a lease of Lease from
// the moment it sent its last successful renewal; Fence reports its term only
// within that lease, and the node's write path asks Fence before each write. A
// standby reads the record every Heartbeat; after Failures heartbeats without
// a new revision it waits TakeoverDelay, reads again, and, if the revision is
// still the one it saw and the record names it as the standby, writes the next
// term at that revision.
//
// Why two members never both see Fence true: a takeover is a write at the
// revision R the standby last saw, so it succeeds only if R is the primary's
// latest renewal. The standby saw R no earlier than the primary sent it, and
// sends the takeover no earlier than Failures×Heartbeat+TakeoverDelay after
// it saw R; the primary's Fence ended Lease after it sent R, and Validate
// requires Lease < Failures×Heartbeat+TakeoverDelay. The argument needs the
// members' clocks to run at the same rate (one machine, or NTP-disciplined
// clocks), not to agree on the time. A record released by StepDown is taken
// over at once: its primary stopped writing before it wrote the release. A
// member renews a record naming itself (after a restart); member names are
// unique because nats-server refuses a route from a second server of the same
// name.
//
// The witness is a member of the cluster but runs no Leader: it never becomes
// primary.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Seed defaults (DESIGN.md §8: heartbeat 1 s, 3 failures, 5 s takeover delay).
const (
	DefaultHeartbeat     = time.Second
	DefaultFailures      = 3
	DefaultTakeoverDelay = 5 * time.Second
)

// Errors of SetStandby and StepDown.
var (
	ErrNotPrimary = errors.New("leader: not primary")
	ErrNoStandby  = errors.New("leader: no standby marked eligible")
	ErrStopped    = errors.New("leader: stopped")
)

// Info is what the record says about a primary.
type Info struct{ Member, NodeID, HTTP, MQTT string }

// Role is a member's part in the pair.
type Role string

const (
	// Primary holds the current term and its lease: Fence is true.
	Primary Role = "primary"
	// Standby follows the primary and may take over.
	Standby Role = "standby"
	// Candidate is a primary whose lease ran out without a renewal: it
	// writes nothing, and becomes primary again with the same term if a
	// renewal succeeds before anyone takes over.
	Candidate Role = "candidate"
)

// State is a member's view of the pair.
type State struct {
	Role Role
	// Term is the term of Record.
	Term uint64
	// Primary is the primary Record names.
	Primary Info
	// Record is the record last read or written.
	Record Record
	// LeaseUntil is when a primary's lease ends; zero otherwise.
	LeaseUntil time.Time
}

// Options configures a Leader.
type Options struct {
	// Self is this member. Self.Member is required.
	Self Info
	// Heartbeat is the period of renewals and of a standby's reads; default
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// Failures is how many heartbeats without a new revision make a standby
	// consider the primary gone; default DefaultFailures.
	Failures int
	// TakeoverDelay is how long a standby waits after Failures before it
	// reads again and takes over; default DefaultTakeoverDelay.
	TakeoverDelay time.Duration
	// Lease is how long a renewal keeps Fence true, counted from when it was
	// sent; default Heartbeat×Failures. It must be less than
	// Heartbeat×Failures+TakeoverDelay.
	Lease time.Duration
	// StartOffset is the log offset a new term starts at; called just before
	// the write that would begin a term. Default: 0.
	StartOffset func() uint64
	// OnChange is called on every change of role or term, in order, from one
	// goroutine of its own; a slow OnChange delays later calls only.
	OnChange func(State)
	// Logger; default discard.
	Logger *slog.Logger
	// Registerer receives the holdfast_ha_* metrics; nil registers nothing.
	Registerer prometheus.Registerer

	// onFence, for tests, sees every change of the fence (f nil: not
	// primary) with the times just before and just after it was made.
	onFence func(f *fence, before, after time.Time)
}

func (o Options) withDefaults() Options {
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Failures == 0 {
		o.Failures = DefaultFailures
	}
	if o.TakeoverDelay == 0 {
		o.TakeoverDelay = DefaultTakeoverDelay
	}
	if o.Lease == 0 {
		o.Lease = o.Heartbeat * time.Duration(o.Failures)
	}
	if o.StartOffset == nil {
		o.StartOffset = func() uint64 { return 0 }
	}
	if o.OnChange == nil {
		o.OnChange = func(State) {}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports every problem with o, defaults applied.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	if o.Self.Member == "" {
		errs = append(errs, errors.New("self member name is required"))
	}
	if o.Heartbeat < 0 || o.Failures < 0 || o.TakeoverDelay < 0 || o.Lease < 0 {
		errs = append(errs, errors.New("heartbeat, failures, takeover delay and lease must not be negative"))
	}
	if limit := o.Heartbeat*time.Duration(o.Failures) + o.TakeoverDelay; o.Lease >= limit {
		errs = append(errs, fmt.Errorf("lease %v must be less than heartbeat×failures+takeover delay (%v)", o.Lease, limit))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("leader: %w", err)
	}
	return nil
}

// Leader runs one member's part in the pair until its context ends.
type Leader struct {
	kv  jetstream.KeyValue
	o   Options
	log *slog.Logger
	m   *metrics

	// fence is the primary's term and lease, nil when not primary. Written
	// by the loop only; read by Fence without a lock.
	fence atomic.Pointer[fence]

	mu    sync.Mutex
	state State // guarded by mu

	cmds chan command
	ch   *changes
	done chan struct{}
}

type fence struct {
	term  uint64
	until time.Time // carries the monotonic clock reading
}

// Run starts l's loop on kv, the pair's bucket. The loop ends when ctx ends;
// Wait waits for that.
func Run(ctx context.Context, kv jetstream.KeyValue, o Options) (*Leader, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	l := &Leader{
		kv:    kv,
		o:     o,
		log:   o.Logger.With("component", "leader", "member", o.Self.Member),
		m:     newMetrics(o.Registerer),
		state: State{Role: Standby},
		cmds:  make(chan command),
		ch:    newChanges(o.OnChange),
		done:  make(chan struct{}),
	}
	l.m.setRole(Standby)
	go l.run(ctx)
	return l, nil
}

// Wait blocks until the loop has ended and every OnChange call returned.
func (l *Leader) Wait() { <-l.done }

// State is l's current view. Role may lag the lease by up to a heartbeat;
// Fence does not.
func (l *Leader) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// Fence reports the term l may write under: ok only while l is primary and
// within its lease. It takes no lock.
func (l *Leader) Fence() (term uint64, ok bool) {
	f := l.fence.Load()
	if f == nil || !time.Now().Before(f.until) {
		return 0, false
	}
	return f.term, true
}

// SetStandby marks member as eligible to take over (empty: nobody is). Only a
// primary may; it returns once the record holding it is committed.
func (l *Leader) SetStandby(ctx context.Context, member string) error {
	return l.do(ctx, command{kind: setStandby, member: member})
}

// StepDown hands the primary's term over for a planned switchover: l stops
// writing at once (Fence false), marks the record released so the member
// named as standby takes over without waiting, and goes on as a standby. It
// fails with ErrNoStandby, and changes nothing, if no standby is marked.
func (l *Leader) StepDown(ctx context.Context) error {
	return l.do(ctx, command{kind: stepDown})
}

type commandKind int

const (
	setStandby commandKind = iota
	stepDown
)

type command struct {
	kind   commandKind
	member string
	ctx    context.Context
	reply  chan error
}

func (l *Leader) do(ctx context.Context, c command) error {
	c.ctx, c.reply = ctx, make(chan error, 1)
	select {
	case l.cmds <- c:
	case <-l.done:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// changes delivers OnChange calls in order from one goroutine.
type changes struct {
	f      func(State)
	mu     sync.Mutex
	queue  []State // guarded by mu
	closed bool    // guarded by mu
	wake   chan struct{}
	done   chan struct{}
}

func newChanges(f func(State)) *changes {
	c := &changes{f: f, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.run()
	return c
}

func (c *changes) push(s State) {
	c.mu.Lock()
	c.queue = append(c.queue, s)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// close delivers what is queued and waits for the last call to return.
func (c *changes) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
}

func (c *changes) run() {
	defer close(c.done)
	for range c.wake {
		c.mu.Lock()
		q, closed := c.queue, c.closed
		c.queue = nil
		c.mu.Unlock()
		for _, s := range q {
			c.f(s)
		}
		if closed {
			return
		}
	}
}
