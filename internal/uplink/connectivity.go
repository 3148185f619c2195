package uplink

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// State is a state of the Connectivity machine.
type State string

// The states of Connectivity.
const (
	Connected State = "connected" // syncs succeed
	Degraded  State = "degraded"  // a sync failed, or the link has just come back
	Offline   State = "offline"   // OfflineAfter syncs in a row failed
)

// States lists every State, in the order of the seed's diagram.
var States = []State{Connected, Degraded, Offline}

// DefaultOfflineAfter is how many consecutive failures take the link offline.
const DefaultOfflineAfter = 3

// ConnectivityOptions configure a Connectivity. Zero fields take the defaults.
type ConnectivityOptions struct {
	// Initial is the state to start in. Default Connected.
	Initial State
	// OfflineAfter is how many consecutive sync failures, counted from the last
	// success or restore, take the link offline. Default DefaultOfflineAfter.
	OfflineAfter int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnChange sees every transition, in order, with the time of the event
	// that caused it. It runs inside the event method (SyncFailed,
	// SyncSucceeded, Restored), after the state has changed; it may call
	// Snapshot but must not call the event methods.
	OnChange func(from, to State, at time.Time)
}

func (o ConnectivityOptions) withDefaults() ConnectivityOptions {
	if o.Initial == "" {
		o.Initial = Connected
	}
	if o.OfflineAfter == 0 {
		o.OfflineAfter = DefaultOfflineAfter
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports every option that cannot work. Zero fields are valid.
func (o ConnectivityOptions) Validate() error {
	var errs []error
	if o.OfflineAfter < 0 {
		errs = append(errs, fmt.Errorf("uplink: offline after %d failures is negative", o.OfflineAfter))
	}
	switch o.Initial {
	case "", Connected, Degraded, Offline:
	default:
		errs = append(errs, fmt.Errorf("uplink: unknown initial state %q", o.Initial))
	}
	return errors.Join(errs...)
}

// ConnectivitySnapshot is the state of a Connectivity at one moment.
type ConnectivitySnapshot struct {
	State State
	// Since is when State was entered.
	Since time.Time
	// OfflineSince is when the link went offline; zero unless State is Offline.
	OfflineSince time.Time
	// ConsecutiveFailures counts failed syncs since the last success or restore.
	ConsecutiveFailures int
	// LastError is the text of the last failure's error; cleared when the
	// state returns to connected, so that a status never shows a stale one.
	LastError string
	// LastSuccess is when a sync last succeeded; zero if none has.
	LastSuccess time.Time
	// Transitions counts every state change since construction.
	Transitions uint64
}

// Connectivity is the network-outage state machine: the sync engine tells it
// how each sync went and it says whether the link is connected, degraded or
// offline. Events that do not apply in the current state (Restored while
// connected, say) change nothing but the counters they carry. It is safe for
// concurrent use.
type Connectivity struct {
	offlineAfter int
	now          func() time.Time

	// emitMu serializes events so that hooks see transitions in order; it is
	// taken before mu and held while the hooks run.
	emitMu sync.Mutex

	mu sync.Mutex
	// Lock mu for the fields below; append to the hooks with emitMu held too.
	snap        ConnectivitySnapshot
	changeHooks []func(from, to State, at time.Time)
	failHooks   []func(err error)
}

type transition struct {
	from, to State
	at       time.Time
}

// NewConnectivity returns a machine in o.Initial. It panics if o is not valid;
// check user input with Validate first.
func NewConnectivity(o ConnectivityOptions) *Connectivity {
	if err := o.Validate(); err != nil {
		panic(err)
	}
	o = o.withDefaults()
	c := &Connectivity{offlineAfter: o.OfflineAfter, now: o.Now}
	now := o.Now()
	c.snap.State = o.Initial
	c.snap.Since = now
	if o.Initial == Offline {
		c.snap.OfflineSince = now
	}
	if o.OnChange != nil {
		c.changeHooks = append(c.changeHooks, o.OnChange)
	}
	return c
}

// SyncFailed records a failed sync: connected becomes degraded, and degraded
// becomes offline once OfflineAfter syncs in a row have failed. Offline stays
// offline. A nil err is recorded as "unknown error".
func (c *Connectivity) SyncFailed(err error) {
	msg := "unknown error"
	if err != nil {
		msg = err.Error()
	}
	c.event(func(at time.Time, ts []transition) []transition {
		c.snap.ConsecutiveFailures++
		c.snap.LastError = msg
		if c.snap.State == Connected {
			ts = c.move(Degraded, at, ts)
		}
		if c.snap.State == Degraded && c.snap.ConsecutiveFailures >= c.offlineAfter {
			ts = c.move(Offline, at, ts)
		}
		return ts
	}, true, err)
}

// SyncSucceeded records a successful sync: degraded becomes connected, and
// offline becomes connected by way of degraded (two transitions). The last
// error is cleared.
func (c *Connectivity) SyncSucceeded() {
	c.event(func(at time.Time, ts []transition) []transition {
		c.snap.ConsecutiveFailures = 0
		c.snap.LastSuccess = at
		if c.snap.State == Offline {
			ts = c.move(Degraded, at, ts)
		}
		if c.snap.State == Degraded {
			ts = c.move(Connected, at, ts)
		}
		c.snap.LastError = ""
		return ts
	}, false, nil)
}

// Restored records that the sink can be reached again (a probe or connect
// succeeded) though no batch has synced yet: offline becomes degraded and the
// failure count starts again from zero. In other states it does nothing.
func (c *Connectivity) Restored() {
	c.event(func(at time.Time, ts []transition) []transition {
		if c.snap.State == Offline {
			c.snap.ConsecutiveFailures = 0
			ts = c.move(Degraded, at, ts)
		}
		return ts
	}, false, nil)
}

// Snapshot returns the current state and counters.
func (c *Connectivity) Snapshot() ConnectivitySnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

// event applies apply under the locks and then runs the hooks for what it
// did, still under emitMu so that no other event's hooks interleave.
func (c *Connectivity) event(apply func(at time.Time, ts []transition) []transition, failed bool, err error) {
	c.emitMu.Lock()
	defer c.emitMu.Unlock()

	c.mu.Lock()
	var buf [2]transition
	ts := apply(c.now(), buf[:0])
	changeHooks, failHooks := c.changeHooks, c.failHooks
	c.mu.Unlock()

	if failed {
		for _, h := range failHooks {
			h(err)
		}
	}
	for _, t := range ts {
		for _, h := range changeHooks {
			h(t.from, t.to, t.at)
		}
	}
}

// move changes the state and appends the transition to ts. c.mu must be held.
func (c *Connectivity) move(to State, at time.Time, ts []transition) []transition {
	from := c.snap.State
	c.snap.State = to
	c.snap.Since = at
	c.snap.Transitions++
	if to == Offline {
		c.snap.OfflineSince = at
	} else {
		c.snap.OfflineSince = time.Time{}
	}
	return append(ts, transition{from, to, at})
}

// watch adds hooks and calls init with the current state, all before any
// further event is delivered, so that a watcher never misses or reorders a
// change. Any of the functions may be nil.
func (c *Connectivity) watch(init func(State), change func(from, to State, at time.Time), failed func(error)) {
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	c.mu.Lock()
	if change != nil {
		c.changeHooks = append(c.changeHooks[:len(c.changeHooks):len(c.changeHooks)], change)
	}
	if failed != nil {
		c.failHooks = append(c.failHooks[:len(c.failHooks):len(c.failHooks)], failed)
	}
	state := c.snap.State
	c.mu.Unlock()
	if init != nil {
		init(state)
	}
}
