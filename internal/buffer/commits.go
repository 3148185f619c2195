package buffer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Commits is the group-commit bookkeeping every engine shares. Appenders add
// records to the engine's commit group being filled; one committer goroutine
// takes that group, makes it durable in one write and fsync (or one
// transaction, or one synced batch) and acknowledges its appenders. Commits
// assigns the offsets, keeps the durable offset and wakes WaitDurable callers
// after every commit, wakes the committer, and holds the failed and closed
// states. What a group holds, how it is made durable and retention are the
// engine's own.
//
// Its lock also guards the engine's group being filled: the add functions of
// Append and Add and RunCommitter's takeLocked run with it held, so that
// records join the group in offset order. The engine takes it with Lock for
// CommittedLocked and FailLocked, and for anything else it keeps with the
// group being filled (a spare group).
type Commits struct {
	log     *slog.Logger
	m       *Metrics
	failMsg string // logged when the engine fails

	mu      sync.Mutex
	room    sync.Cond // on mu: signalled when the committer takes a group, after each commit and on Close
	next    uint64    // offset of the next record appended
	failed  error     // the first write or commit that failed
	closed  bool
	synced  chan struct{} // closed and replaced after every commit and on Close
	wake    chan struct{} // one pending wake-up for the committer
	stopped chan struct{} // closed when the committer returns

	durable atomic.Uint64 // every offset below this is durable
}

// NewCommits returns the bookkeeping of an engine whose next record gets offset
// next, every record below it being durable. failMsg is logged, with the
// error, when the engine fails; the failure also sets m.Failed.
func NewCommits(next uint64, log *slog.Logger, m *Metrics, failMsg string) *Commits {
	c := &Commits{
		log:     log,
		m:       m,
		failMsg: failMsg,
		next:    next,
		synced:  make(chan struct{}),
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	c.room.L = &c.mu
	c.durable.Store(next)
	return c
}

// Lock locks the state and the engine's group being filled.
func (c *Commits) Lock() { c.mu.Lock() }

// Unlock unlocks what Lock locked.
func (c *Commits) Unlock() { c.mu.Unlock() }

// NextOffset returns the offset the next appended record will get.
func (c *Commits) NextOffset() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next
}

// DurableOffset returns the offset below which every record is durable.
func (c *Commits) DurableOffset() uint64 { return c.durable.Load() }

// markDurable moves the durable offset to next ahead of CommittedLocked, for
// the native log, which makes its records readable before the committer
// acknowledges them.
func (c *Commits) markDurable(next uint64) { c.durable.Store(next) }

// Err returns the error that put the engine in the failed state, or nil.
func (c *Commits) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// Closed reports whether Close has been called.
func (c *Commits) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Usable returns why nothing can be written, if anything: ErrFailed wrapping
// the cause once the engine has failed, ErrClosed once it is closed.
func (c *Commits) Usable() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usableLocked()
}

func (c *Commits) usableLocked() error {
	if c.failed != nil {
		return c.failedErrLocked()
	}
	if c.closed {
		return ErrClosed
	}
	return nil
}

func (c *Commits) failedErrLocked() error { return fmt.Errorf("%w: %v", ErrFailed, c.failed) }

// Append assigns n consecutive offsets to records that add puts in the group
// being filled, and returns the first once that group is durable. add runs
// with the lock held and returns the group's Ack. While full reports the group
// being filled over the engine's MaxPendingBytes, Append first waits for the
// committer to take it. It does not call add if the engine has failed or is
// closed (it returns Usable's error) or if n is 0 (it returns the next offset).
func (c *Commits) Append(n int, full func() bool, add func(first uint64) *Ack) (uint64, error) {
	c.mu.Lock()
	for c.failed == nil && !c.closed && full() {
		c.room.Wait()
	}
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	first := c.next
	if n == 0 {
		c.mu.Unlock()
		return first, nil
	}
	c.next += uint64(n)
	ack := add(first)
	c.mu.Unlock()
	c.signal()
	if err := ack.Wait(); err != nil {
		return 0, err
	}
	return first, nil
}

// Add puts what is not records (cursor updates, removals) in the group being
// filled with add, which runs with the lock held and returns the group's Ack,
// and returns once that group is committed. It does not wait for room. If the
// engine has failed or is closed it returns Usable's error without calling
// add.
func (c *Commits) Add(add func() *Ack) error {
	c.mu.Lock()
	if err := c.usableLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	ack := add()
	c.mu.Unlock()
	c.signal()
	return ack.Wait()
}

func (c *Commits) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// RunCommitter is the engine's committer goroutine, started by Open. It waits
// for groups to commit and hands each to commit, which makes it durable, calls
// CommittedLocked and finishes it; it returns once the engine is closed and
// the last group is committed, which Close waits for.
//
// takeLocked, called with the lock held, takes the group being filled and
// puts an empty one in its place, or reports false if the group being filled
// is empty. Once the engine has failed, the groups it takes are finished with
// ErrFailed instead of committed: their appenders joined before the failure
// was recorded.
func RunCommitter[G interface{ Finish(error) }](c *Commits, takeLocked func() (G, bool), commit func(G)) {
	defer close(c.stopped)
	c.mu.Lock()
	for {
		g, ok := takeLocked()
		switch {
		case ok && c.failed == nil:
			c.room.Broadcast()
			c.mu.Unlock()
			commit(g)
		case ok:
			c.room.Broadcast()
			err := c.failedErrLocked()
			c.mu.Unlock()
			g.Finish(err)
		case c.closed:
			c.mu.Unlock()
			return
		default:
			c.mu.Unlock()
			<-c.wake
		}
		c.mu.Lock()
	}
}

// CommittedLocked records how the commit of a group ended and returns the
// error for its appenders: nil once every offset below next is durable, or
// ErrFailed wrapping err, the engine failing with it. Either way it wakes
// WaitDurable callers and appenders waiting for room.
func (c *Commits) CommittedLocked(next uint64, err error) error {
	if err != nil {
		c.FailLocked(err) // wakes the waiters
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	c.durable.Store(next)
	close(c.synced)
	c.synced = make(chan struct{})
	c.room.Broadcast()
	return nil
}

// Fail puts the engine in the failed state, keeping the first cause: nothing
// more is acknowledged. WaitDurable callers and appenders waiting for room
// are woken and get the failure.
func (c *Commits) Fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.FailLocked(err)
}

// FailLocked is Fail with the lock held.
func (c *Commits) FailLocked(err error) {
	if c.failed != nil {
		return
	}
	c.failed = err
	c.m.Failed.Set(1)
	c.log.Error(c.failMsg, "err", err)
	// WaitDurable callers and appenders waiting for room learn of it now,
	// not at the next commit (there may be none).
	close(c.synced)
	c.synced = make(chan struct{})
	c.room.Broadcast()
}

// WaitDurable blocks until every offset below off is durable, the engine fails
// or is closed, or ctx ends.
func (c *Commits) WaitDurable(ctx context.Context, off uint64) error {
	for {
		c.mu.Lock()
		if c.durable.Load() >= off {
			c.mu.Unlock()
			return nil
		}
		if err := c.usableLocked(); err != nil {
			c.mu.Unlock()
			return err
		}
		ch := c.synced
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close puts the engine in the closed state, lets the committer commit the
// groups in flight and waits for it to return; then it wakes WaitDurable
// callers, who find the engine closed. It returns ErrClosed if the engine was
// already closed. The engine closes its files after it.
func (c *Commits) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true
	c.room.Broadcast()
	c.mu.Unlock()
	c.signal()
	<-c.stopped
	c.mu.Lock()
	close(c.synced)
	c.synced = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// Ack is what the appenders of one commit group wait for: the engines' group
// types embed it. Finish is called once, by the committer.
type Ack struct {
	done chan struct{}
	err  error
}

// NewAck returns an Ack not yet finished.
func NewAck() Ack { return Ack{done: make(chan struct{})} }

// Finish ends the group: its appenders return err, nil once it is durable.
func (a *Ack) Finish(err error) {
	a.err = err
	close(a.done)
}

// Wait blocks until the group is finished and returns its error.
func (a *Ack) Wait() error {
	<-a.done
	return a.err
}
