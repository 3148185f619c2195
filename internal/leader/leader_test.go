package leader

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/hacluster/hatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Short timings: a standby takes over no earlier than 600 ms after it last
// saw a renewal; a lease lasts 300 ms.
const (
	hb       = 100 * time.Millisecond
	failures = 3
	delay    = 300 * time.Millisecond
	lease    = 300 * time.Millisecond
	earliest = hb*failures + delay
)

// fenceLog records when a Leader's Fence was true, generously: from just
// before a fence was set until the earlier of its lease end and just after
// it was replaced.
type fenceLog struct {
	mu   sync.Mutex
	done []interval
	open *interval
}

type interval struct {
	term     uint64
	from, to time.Time
}

func (fl *fenceLog) hook(f *fence, before, after time.Time) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.open != nil {
		if after.Before(fl.open.to) {
			fl.open.to = after
		}
		fl.done = append(fl.done, *fl.open)
		fl.open = nil
	}
	if f != nil {
		fl.open = &interval{term: f.term, from: before, to: f.until}
	}
}

func (fl *fenceLog) intervals() []interval {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	out := append([]interval(nil), fl.done...)
	if fl.open != nil {
		iv := *fl.open
		if now := time.Now(); now.Before(iv.to) {
			iv.to = now
		}
		out = append(out, iv)
	}
	return out
}

// syncBuffer is a log a test can read while the Leader writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pair is two members running a Leader (m0, m1) and a witness (m2).
type pair struct {
	c      *hatest.Cluster
	kv     [2]jetstream.KeyValue
	l      [2]*Leader
	o      [2]Options
	cancel [2]context.CancelFunc
	fences [2]*fenceLog
	logs   [2]*syncBuffer

	mu      sync.Mutex
	changes [2][]State // guarded by mu
}

func startPair(t *testing.T) *pair {
	t.Helper()
	p := &pair{c: hatest.Start(t, nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 2 {
		p.kv[i] = p.c.KV(ctx, t, i)
		p.fences[i], p.logs[i] = &fenceLog{}, &syncBuffer{}
		p.o[i] = Options{
			Self:          Info{Member: fmt.Sprintf("m%d", i), NodeID: fmt.Sprintf("node-%d", i), HTTP: fmt.Sprintf("http://127.0.0.1:80%d", i)},
			Heartbeat:     hb,
			Failures:      failures,
			TakeoverDelay: delay,
			Lease:         lease,
			StartOffset:   func() uint64 { return uint64(100 * (i + 1)) },
			OnChange: func(s State) {
				p.mu.Lock()
				p.changes[i] = append(p.changes[i], s)
				p.mu.Unlock()
			},
			Logger:  slog.New(slog.NewTextHandler(p.logs[i], &slog.HandlerOptions{Level: slog.LevelDebug})),
			onFence: p.fences[i].hook,
		}
	}
	for i := range 2 {
		p.start(t, i)
	}
	t.Cleanup(func() {
		p.stopAll()
		p.checkNoOverlap(t)
		if t.Failed() {
			for i := range 2 {
				t.Logf("m%d log:\n%s", i, p.logs[i].String())
			}
		}
	})
	return p
}

// start runs member i's Leader (again).
func (p *pair) start(t *testing.T, i int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l, err := Run(ctx, p.kv[i], p.o[i])
	if err != nil {
		t.Fatal(err)
	}
	p.l[i], p.cancel[i] = l, cancel
}

// stop ends member i's Leader and waits for it.
func (p *pair) stop(i int) {
	p.cancel[i]()
	p.l[i].Wait()
}

func (p *pair) stopAll() {
	for i := range 2 {
		p.stop(i)
	}
}

func (p *pair) checkNoOverlap(t *testing.T) {
	t.Helper()
	a, b := p.fences[0].intervals(), p.fences[1].intervals()
	for _, x := range a {
		for _, y := range b {
			if x.from.Before(y.to) && y.from.Before(x.to) {
				t.Errorf("both members fenced at once: m0 term %d %v..%v, m1 term %d %v..%v",
					x.term, x.from.Format("15:04:05.000"), x.to.Format("15:04:05.000"),
					y.term, y.from.Format("15:04:05.000"), y.to.Format("15:04:05.000"))
			}
		}
	}
}

// waitPrimary waits until one Leader is primary of term and the other has
// read that record, and returns the primary's index.
func (p *pair) waitPrimary(t *testing.T, term uint64, within time.Duration) int {
	t.Helper()
	var who int
	waitFor(t, fmt.Sprintf("a primary of term %d", term), within, func() bool {
		for i := range 2 {
			s, o := p.l[i].State(), p.l[1-i].State()
			if _, ok := p.l[i].Fence(); ok && s.Role == Primary && s.Term == term &&
				o.Role == Standby && o.Term == term && o.Primary.Member == s.Primary.Member {
				who = i
				return true
			}
		}
		return false
	})
	return who
}

// markStandby has primary i mark the other eligible, and waits until the
// other has read it.
func (p *pair) markStandby(t *testing.T, i int) {
	t.Helper()
	other := p.o[1-i].Self.Member
	if err := p.l[i].SetStandby(testCtx(t), other); err != nil {
		t.Fatalf("SetStandby: %v", err)
	}
	waitFor(t, "the standby to see it is eligible", 5*time.Second, func() bool {
		return p.l[1-i].State().Record.Standby == other
	})
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestOnePrimary(t *testing.T) {
	p := startPair(t)
	i := p.waitPrimary(t, 1, 10*time.Second)
	s := p.l[i].State()
	if s.Primary.NodeID != p.o[i].Self.NodeID || s.Record.Start != uint64(100*(i+1)) ||
		len(s.Record.History) != 1 || s.Record.History[0] != (TermStart{1, p.o[i].Self.Member, s.Record.Start}) {
		t.Fatalf("record %+v", s.Record)
	}
	if term, ok := p.l[1-i].Fence(); ok {
		t.Fatalf("the standby is fenced for term %d", term)
	}
	if err := p.l[1-i].SetStandby(testCtx(t), "x"); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("SetStandby on a standby: %v", err)
	}
	if err := p.l[i].StepDown(testCtx(t)); !errors.Is(err, ErrNoStandby) {
		t.Fatalf("StepDown with no standby: %v", err)
	}
	if _, ok := p.l[i].Fence(); !ok {
		t.Fatal("a refused StepDown stepped down")
	}
	p.mu.Lock()
	ch := p.changes[i]
	p.mu.Unlock()
	if len(ch) != 1 || ch[0].Role != Primary || ch[0].Term != 1 {
		t.Fatalf("OnChange of the primary: %+v", ch)
	}
	if v := promtest.ToFloat64(p.l[i].m.role.WithLabelValues("primary")); v != 1 {
		t.Fatalf("role gauge %v", v)
	}
}

func TestTakeoverWhenPrimaryDies(t *testing.T) {
	p := startPair(t)
	i := p.waitPrimary(t, 1, 10*time.Second)
	p.markStandby(t, i)
	killed := time.Now()
	p.c.M[i].Close()
	j := 1 - i
	waitFor(t, "the standby to take over", 15*time.Second, func() bool {
		s := p.l[j].State()
		return s.Role == Primary && s.Term == 2
	})
	took := time.Since(killed)
	t.Logf("takeover %v after the primary's member was closed", took)
	if took < earliest-2*hb {
		t.Fatalf("took over after %v, before the failure timeout", took)
	}
	r := p.l[j].State().Record
	want := []TermStart{{1, p.o[i].Self.Member, uint64(100 * (i + 1))}, {2, p.o[j].Self.Member, uint64(100 * (j + 1))}}
	if r.Member != p.o[j].Self.Member || r.Standby != "" || r.Start != want[1].Start || fmt.Sprint(r.History) != fmt.Sprint(want) {
		t.Fatalf("record after takeover %+v", r)
	}
	if n := promtest.ToFloat64(p.l[j].m.takeovers); n != 1 {
		t.Fatalf("takeovers %v", n)
	}
	waitFor(t, "the old primary to stop writing", 5*time.Second, func() bool {
		_, ok := p.l[i].Fence()
		return !ok && p.l[i].State().Role == Candidate
	})
}

func TestIsolatedPrimaryStopsAndStandbyTakesOver(t *testing.T) {
	p := startPair(t)
	i := p.waitPrimary(t, 1, 10*time.Second)
	j := 1 - i
	p.markStandby(t, i)
	p.c.Cut(i, j)
	p.c.Cut(i, 2)
	cut := time.Now()
	waitFor(t, "the standby to take over", 15*time.Second, func() bool {
		s := p.l[j].State()
		return s.Role == Primary && s.Term == 2
	})
	t.Logf("takeover %v after the cut", time.Since(cut))
	for _, iv := range p.fences[i].intervals() {
		if iv.to.After(cut.Add(lease)) {
			t.Fatalf("the cut-off primary was fenced until %v after the cut (lease %v)", iv.to.Sub(cut), lease)
		}
	}
	if s := p.l[i].State(); s.Role != Candidate || s.Term != 1 {
		t.Fatalf("the cut-off primary: %+v", s)
	}
	p.c.Heal(t, i, j)
	p.c.Heal(t, i, 2)
	waitFor(t, "the old primary to follow term 2", 15*time.Second, func() bool {
		s := p.l[i].State()
		return s.Role == Standby && s.Term == 2 && s.Primary.Member == p.o[j].Self.Member
	})
}

func TestPrimaryCutFromStandbyOnlyStaysPrimary(t *testing.T) {
	p := startPair(t)
	i := p.waitPrimary(t, 1, 10*time.Second)
	j := 1 - i
	p.markStandby(t, i)
	// Writes go to the bucket's stream leader; on the standby's side of the
	// cut it would take the primary's writes away.
	if err := p.c.M[i].LeadBucket(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	p.c.Cut(i, j)
	// Long enough for the standby to have tried to take over three times.
	end := time.Now().Add(3*earliest + 200*time.Millisecond)
	for time.Now().Before(end) {
		if s := p.l[j].State(); s.Role != Standby || s.Term != 1 {
			t.Fatalf("the standby: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if term, ok := p.l[i].Fence(); !ok || term != 1 {
		t.Fatalf("the primary lost its fence: %d %v", term, ok)
	}
	if n := promtest.ToFloat64(p.l[j].m.takeovers); n != 0 {
		t.Fatalf("takeovers %v", n)
	}
	p.c.Heal(t, i, j)
}

func TestIneligibleStandbyNeverTakesOver(t *testing.T) {
	p := startPair(t)
	i := p.waitPrimary(t, 1, 10*time.Second)
	j := 1 - i
	p.c.M[i].Close()
	waitFor(t, "the standby to find the primary gone", 15*time.Second, func() bool {
		return strings.Contains(p.logs[j].String(), "has not marked this member eligible")
	})
	// And once more, after another full round.
	end := time.Now().Add(earliest + hb)
	for time.Now().Before(end) {
		if s := p.l[j].State(); s.Role != Standby || s.Term != 1 {
			t.Fatalf("the standby: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := p.l[j].Fence(); ok {
		t.Fatal("the ineligible standby is fenced")
	}
}

func TestStepDownHandsOverAtOnce(t *testing.T) {
	p := startPair(t)
	i := p.waitPrimary(t, 1, 10*time.Second)
	j := 1 - i
	p.markStandby(t, i)
	if err := p.l[j].StepDown(testCtx(t)); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("StepDown on the standby: %v", err)
	}
	start := time.Now()
	if err := p.l[i].StepDown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.l[i].Fence(); ok {
		t.Fatal("fenced after StepDown")
	}
	waitFor(t, "the standby to take over", 5*time.Second, func() bool {
		s := p.l[j].State()
		return s.Role == Primary && s.Term == 2
	})
	t.Logf("handover took %v", time.Since(start))
	// The handover path, not the failover after missed renewals: told by
	// what the standby did, not by a clock.
	if !strings.Contains(p.logs[j].String(), "the primary handed over") {
		t.Fatalf("the standby took over without the handover:\n%s", p.logs[j].String())
	}
	waitFor(t, "the old primary to follow", 5*time.Second, func() bool {
		s := p.l[i].State()
		return s.Role == Standby && s.Term == 2
	})
}

func TestRestartRenewsItsOwnTerm(t *testing.T) {
	p := startPair(t)
	i := p.waitPrimary(t, 1, 10*time.Second)
	p.stop(i)
	p.start(t, i)
	waitFor(t, "the restarted primary", 5*time.Second, func() bool {
		s := p.l[i].State()
		_, ok := p.l[i].Fence()
		return ok && s.Role == Primary && s.Term == 1
	})
}

func TestValidate(t *testing.T) {
	if err := (Options{Self: Info{Member: "a"}}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{
		{},
		{Self: Info{Member: "a"}, Lease: 8 * time.Second},
		{Self: Info{Member: "a"}, Heartbeat: time.Second, Failures: 2, TakeoverDelay: time.Second, Lease: 3 * time.Second},
		{Self: Info{Member: "a"}, Heartbeat: -time.Second},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestHistoryKeepsTheNewest(t *testing.T) {
	r := first(Info{Member: "a"}, 0, 0)
	for n := range 40 {
		r = r.next(Info{Member: "a"}, uint64(n), 0)
	}
	if len(r.History) != MaxHistory || r.History[MaxHistory-1].Term != 41 || r.History[0].Term != 41-MaxHistory+1 {
		t.Fatalf("history %v", r.History)
	}
	got, err := decode(r.encode())
	if err != nil || got.Term != 41 || len(got.History) != MaxHistory {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if _, err := decode([]byte(`{"term":0}`)); !errors.Is(err, ErrBadRecord) {
		t.Fatal("decoded a record without a term")
	}
}

func TestCandidateRegainsItsTerm(t *testing.T) {
	p := startPair(t)
	i := p.waitPrimary(t, 1, 10*time.Second)
	j := 1 - i
	// The standby is not eligible: nobody takes over while the primary is
	// cut off.
	p.c.Cut(i, j)
	p.c.Cut(i, 2)
	waitFor(t, "the cut-off primary to become candidate", 10*time.Second, func() bool {
		_, ok := p.l[i].Fence()
		return !ok && p.l[i].State().Role == Candidate
	})
	p.c.Heal(t, i, j)
	p.c.Heal(t, i, 2)
	waitFor(t, "the candidate to be primary again", 20*time.Second, func() bool {
		s := p.l[i].State()
		_, ok := p.l[i].Fence()
		return ok && s.Role == Primary && s.Term == 1
	})
	if s := p.l[j].State(); s.Role != Standby || s.Term != 1 {
		t.Fatalf("the standby: %+v", s)
	}
	if n := promtest.ToFloat64(p.l[i].m.renewFailures); n == 0 {
		t.Fatal("no renewal failure counted")
	}
}
