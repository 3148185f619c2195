package leader

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// loop is the state the run goroutine owns.
type loop struct {
	role Role
	rec  Record // last record read or written
	rev  uint64 // its revision; 0 when none has been read

	// A primary's or candidate's lease: until when its last successful
	// renewal lets it write.
	leaseUntil time.Time

	// A standby's failure count: heartbeats since it saw rev at seenAt.
	seenAt   time.Time
	failures int
	// resigned is the highest term this member handed over with StepDown;
	// it never renews a term at or below it.
	resigned uint64
	// ineligible is set once the standby has logged that the record does not
	// name it, so it logs that once per revision.
	ineligible bool

	emitted struct {
		role Role
		term uint64
	}
}

func (l *Leader) run(ctx context.Context) {
	defer close(l.done)
	defer l.ch.close()
	defer l.setFence(nil)

	s := &loop{role: Standby}
	s.emitted.role = Standby
	tick := time.NewTicker(l.o.Heartbeat)
	defer tick.Stop()
	for {
		switch s.role {
		case Primary, Candidate:
			l.renew(ctx, s)
		default:
			l.follow(ctx, s)
		}
		l.publish(s)
		if !l.nextTick(ctx, s, tick) {
			return
		}
	}
}

// sleep serves commands for d; false if ctx ends first.
func (l *Leader) sleep(ctx context.Context, s *loop, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case c := <-l.cmds:
			c.reply <- l.command(s, c)
		}
	}
}

// nextTick serves commands until the next heartbeat; false once ctx ends.
func (l *Leader) nextTick(ctx context.Context, s *loop, tick *time.Ticker) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			return true
		case c := <-l.cmds:
			c.reply <- l.command(s, c)
			l.publish(s)
		}
	}
}

// request bounds one read or write of the record. A renewal is of no use
// after the lease it would extend, and a standby's count is anchored where a
// read returns, so Lease is long enough for both.
func (l *Leader) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.o.Lease)
}

// write compare-and-sets the record at rev (0: creates it) and returns the
// new revision and when the write was sent.
func (l *Leader) write(ctx context.Context, r Record, rev uint64) (uint64, time.Time, error) {
	rctx, cancel := l.request(ctx)
	defer cancel()
	sent := time.Now()
	var err error
	if rev == 0 {
		rev, err = l.kv.Create(rctx, Key, r.encode())
	} else {
		rev, err = l.kv.Update(rctx, Key, r.encode(), rev)
	}
	return rev, sent, err
}

func (l *Leader) read(ctx context.Context) (Record, uint64, error) {
	rctx, cancel := l.request(ctx)
	defer cancel()
	e, err := l.kv.Get(rctx, Key)
	if err != nil {
		return Record{}, 0, err
	}
	r, err := decode(e.Value())
	return r, e.Revision(), err
}

// becomePrimary records a successful write of r at rev, sent at sent.
func (l *Leader) becomePrimary(s *loop, r Record, rev uint64, sent time.Time) {
	s.rec, s.rev, s.role = r, rev, Primary
	s.leaseUntil = sent.Add(l.o.Lease)
	s.failures, s.ineligible = 0, false
	l.setFence(&fence{term: r.Term, until: s.leaseUntil})
}

// becomeStandby follows r, read at rev.
func (l *Leader) becomeStandby(s *loop, r Record, rev uint64) {
	l.setFence(nil)
	s.role, s.leaseUntil = Standby, time.Time{}
	l.saw(s, r, rev)
}

// saw notes a record read at rev; a new revision resets the failure count.
func (l *Leader) saw(s *loop, r Record, rev uint64) {
	if rev != s.rev {
		s.failures, s.ineligible = 0, false
	}
	s.rec, s.rev, s.seenAt = r, rev, time.Now()
}

// renew is a primary's (or candidate's) heartbeat.
func (l *Leader) renew(ctx context.Context, s *loop) {
	r := s.rec
	r.RenewedMs = time.Now().UnixMilli()
	rev, sent, err := l.write(ctx, r, s.rev)
	switch {
	case err == nil:
		if s.role == Candidate {
			l.log.Info("renewed the lease again", "term", r.Term)
		}
		l.becomePrimary(s, r, rev, sent)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		cur, crev, rerr := l.read(ctx)
		if rerr != nil {
			l.renewFailed(s, rerr)
			return
		}
		if l.mine(s, cur) && cur.Term == s.rec.Term {
			// An earlier renewal that timed out did land: carry on from it.
			// The lease is not extended: when it was sent is unknown.
			s.rec, s.rev = cur, crev
			return
		}
		l.log.Warn("another member holds the record: stepping down", "term", cur.Term, "primary", cur.Member)
		l.becomeStandby(s, cur, crev)
	default:
		l.renewFailed(s, err)
	}
}

func (l *Leader) renewFailed(s *loop, err error) {
	l.m.renewFailures.Inc()
	if s.role == Primary && !time.Now().Before(s.leaseUntil) {
		l.log.Warn("lease ran out without a renewal: not writing", "term", s.rec.Term, "err", err)
		s.role = Candidate
		l.setFence(nil)
		return
	}
	l.log.Debug("renewal failed", "term", s.rec.Term, "err", err)
}

// mine reports whether r is this member's own record, one it may renew.
func (l *Leader) mine(s *loop, r Record) bool {
	return r.Member == l.o.Self.Member && !r.Released && r.Term > s.resigned
}

// follow is a standby's heartbeat.
func (l *Leader) follow(ctx context.Context, s *loop) {
	r, rev, err := l.read(ctx)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		l.create(ctx, s)
		return
	case errors.Is(err, ErrBadRecord):
		// Nobody can take over from a record nobody can read: say so.
		s.failures++
		l.log.Error("the leader record does not decode", "err", err)
	case err != nil:
		s.failures++
		l.log.Debug("reading the record failed", "err", err, "failures", s.failures)
	case l.mine(s, r):
		// This member's own record, from before a restart (or a takeover
		// whose answer was lost): renew it, same term.
		l.saw(s, r, rev)
		if nrev, sent, err := l.write(ctx, r, rev); err == nil {
			l.log.Info("renewed its own record", "term", r.Term)
			l.becomePrimary(s, r, nrev, sent)
		}
		return
	case rev != s.rev:
		l.saw(s, r, rev)
		if r.Released && r.Standby == l.o.Self.Member {
			l.log.Info("the primary handed over", "term", r.Term, "primary", r.Member)
			l.takeover(ctx, s)
		}
		return
	default:
		s.failures++
	}
	if s.failures < l.o.Failures || s.rev == 0 {
		return
	}
	l.tryTakeover(ctx, s)
}

// create writes the first record, term 1.
func (l *Leader) create(ctx context.Context, s *loop) {
	r := first(l.o.Self, l.o.StartOffset(), time.Now().UnixMilli())
	rev, sent, err := l.write(ctx, r, 0)
	if err != nil {
		l.log.Debug("creating the record failed", "err", err)
		return
	}
	l.log.Info("created the record: primary", "term", r.Term)
	l.becomePrimary(s, r, rev, sent)
}

// tryTakeover runs once a standby has counted Failures: it waits
// TakeoverDelay — and at least Failures×Heartbeat+TakeoverDelay from when it
// saw the revision — reads again and takes over if nothing changed and the
// record names it as the standby.
func (l *Leader) tryTakeover(ctx context.Context, s *loop) {
	wait := l.o.TakeoverDelay
	earliest := s.seenAt.Add(l.o.Heartbeat*time.Duration(l.o.Failures) + l.o.TakeoverDelay)
	if d := time.Until(earliest); d > wait {
		wait = d
	}
	if !l.sleep(ctx, s, wait) {
		return
	}
	r, rev, err := l.read(ctx)
	if err != nil {
		l.log.Debug("re-check before takeover failed", "err", err)
		return
	}
	if rev != s.rev {
		l.saw(s, r, rev)
		return
	}
	if r.Standby != l.o.Self.Member {
		if !s.ineligible {
			l.log.Warn("the primary looks gone but has not marked this member eligible: not taking over",
				"term", r.Term, "primary", r.Member, "standby", r.Standby)
			s.ineligible = true
		}
		return
	}
	l.takeover(ctx, s)
}

// takeover writes the next term at the revision last seen.
func (l *Leader) takeover(ctx context.Context, s *loop) {
	r := s.rec.next(l.o.Self, l.o.StartOffset(), time.Now().UnixMilli())
	rev, sent, err := l.write(ctx, r, s.rev)
	if err != nil {
		l.log.Info("takeover failed: staying standby", "term", r.Term, "err", err)
		s.failures = 0
		return
	}
	l.m.takeovers.Inc()
	l.log.Warn("took over: primary", "term", r.Term, "previous", s.rec.Member, "start", r.Start)
	l.becomePrimary(s, r, rev, sent)
}

func (l *Leader) command(s *loop, c command) error {
	if s.role != Primary {
		return ErrNotPrimary
	}
	switch c.kind {
	case setStandby:
		r := s.rec
		r.Standby, r.RenewedMs = c.member, time.Now().UnixMilli()
		rev, sent, err := l.write(c.ctx, r, s.rev)
		if err != nil {
			return err
		}
		l.becomePrimary(s, r, rev, sent)
		return nil
	case stepDown:
		if s.rec.Standby == "" || s.rec.Standby == l.o.Self.Member {
			return ErrNoStandby
		}
		// Stop writing before the record says so.
		l.setFence(nil)
		s.role, s.leaseUntil, s.resigned = Standby, time.Time{}, s.rec.Term
		r := s.rec
		r.Released, r.RenewedMs = true, time.Now().UnixMilli()
		rev, _, err := l.write(c.ctx, r, s.rev)
		if err != nil {
			// Not released: the standby takes over after the usual wait.
			l.saw(s, s.rec, s.rev)
			return err
		}
		l.log.Info("stepped down", "term", r.Term, "standby", r.Standby)
		l.saw(s, r, rev)
		return nil
	}
	return nil
}

// publish updates State, the metrics and, on a change of role or term,
// queues OnChange.
func (l *Leader) publish(s *loop) {
	st := State{Role: s.role, Term: s.rec.Term, Primary: s.rec.Primary(), Record: s.rec}
	if s.role == Primary {
		st.LeaseUntil = s.leaseUntil
	}
	l.mu.Lock()
	l.state = st
	l.mu.Unlock()
	if s.emitted.role == s.role && s.emitted.term == s.rec.Term {
		return
	}
	s.emitted.role, s.emitted.term = s.role, s.rec.Term
	l.m.setRole(s.role)
	l.m.term.Set(float64(s.rec.Term))
	l.ch.push(st)
}

// setFence publishes f (nil: not primary) to Fence.
func (l *Leader) setFence(f *fence) {
	if l.o.onFence == nil {
		l.fence.Store(f)
		return
	}
	before := time.Now()
	l.fence.Store(f)
	l.o.onFence(f, before, time.Now())
}
