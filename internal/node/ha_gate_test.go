package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// fakeRepl is a standby as the primary sees it: how far it holds the log.
type fakeRepl struct {
	mu      sync.Mutex
	member  string
	next    uint64
	contact time.Time
}

func (f *fakeRepl) set(member string, next uint64) {
	f.mu.Lock()
	f.member, f.next, f.contact = member, next, time.Now()
	f.mu.Unlock()
}

func (f *fakeRepl) Replicated() (string, uint64, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.member, f.next, f.contact
}

func (f *fakeRepl) WaitReplicated(ctx context.Context, off uint64) error {
	for {
		if _, next, _ := f.Replicated(); next >= off {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

type fakeFence struct {
	term atomic.Uint64
	ok   atomic.Bool
}

func (f *fakeFence) Fence() (uint64, bool) { return f.term.Load(), f.ok.Load() }

func openTestLog(t *testing.T) *buffer.Log {
	t.Helper()
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

// TestBoundedReaderStopsAtTheStandby: the sinks' reader gives only records
// the standby holds, and the record it read past the limit comes first once
// the limit moves.
func TestBoundedReaderStopsAtTheStandby(t *testing.T) {
	l := openTestLog(t)
	for i := 0; i < 10; i++ {
		_, err := l.Append([]byte{byte(i)})
		require.NoError(t, err)
	}
	var limit atomic.Uint64
	limit.Store(4)
	e := &boundedEngine{Engine: l, limit: limit.Load, wait: func(context.Context, uint64) error { return nil }}
	require.EqualValues(t, 4, e.DurableOffset())
	r := e.NewReader(0)
	defer r.Close()
	var got []uint64
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.Equal(t, byte(off), p[0])
		got = append(got, off)
	}
	require.Equal(t, []uint64{0, 1, 2, 3}, got)
	require.EqualValues(t, 4, r.Position())
	limit.Store(10)
	off, p, err := r.Next()
	require.NoError(t, err)
	require.EqualValues(t, 4, off)
	require.Equal(t, byte(4), p[0])
}

// newTestGate is a gate of a primary in term 7 with its lease, over l, with
// a standby not heard of yet; recorded lists what it wrote as the eligible
// standby.
func newTestGate(t *testing.T, l *buffer.Log, syncMode bool) (g *pairGate, src *fakeRepl, f *fakeFence, recorded *[]string) {
	src, f = &fakeRepl{}, &fakeFence{}
	f.term.Store(7)
	f.ok.Store(true)
	var (
		mu      sync.Mutex
		written []string
	)
	g = &pairGate{
		buf: l, src: src, fence: f, term: 7,
		setSB: func(_ context.Context, member string) error {
			mu.Lock()
			written = append(written, member)
			mu.Unlock()
			return nil
		},
		sync: syncMode, timeout: 200 * time.Millisecond, log: slog.New(slog.DiscardHandler),
		alerts:  func() *alert.Dispatcher { return nil },
		metrics: newHAMetrics(prometheus.NewRegistry()),
		joinLag: 10,
		firing:  &haFiring{},
	}
	return g, src, f, &written
}

// TestPairGateJoinsOnlyWhenCaughtUp: a standby is named as the one that may
// take over only once it holds everything durable when it started to join;
// until then acks do not wait for it (alone), then they do (joining,
// paired); a silent standby is dropped again after the timeout, first in
// the leader record.
func TestPairGateJoinsOnlyWhenCaughtUp(t *testing.T) {
	l := openTestLog(t)
	for i := 0; i < 100; i++ {
		_, err := l.Append([]byte{1})
		require.NoError(t, err)
	}
	g, src, _, recorded := newTestGate(t, l, true)
	ctx := context.Background()

	// Alone: nothing waits.
	require.NoError(t, g.waitAck(ctx, 100))
	require.EqualValues(t, uint64(1<<64-1), g.limit())

	// A standby far behind does not join.
	src.set("b", 10)
	g.step(ctx)
	st, _ := g.status()
	require.Equal(t, gateAlone, st)

	// Close enough: joining, acks and sinks wait from now on.
	src.set("b", 95)
	g.step(ctx)
	st, member := g.status()
	require.Equal(t, gateJoining, st)
	require.Equal(t, "b", member)
	require.EqualValues(t, 95, g.limit())
	wctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	require.ErrorIs(t, g.waitAck(wctx, 100), context.DeadlineExceeded)
	cancel()
	require.Empty(t, *recorded, "named before it held everything")

	// Caught up: named in the leader record, paired.
	src.set("b", 100)
	g.step(ctx)
	st, _ = g.status()
	require.Equal(t, gatePaired, st)
	require.Equal(t, []string{"b"}, *recorded)
	require.NoError(t, g.waitAck(ctx, 100))

	// Silent past the timeout: dropped in the leader record, then alone.
	time.Sleep(250 * time.Millisecond)
	g.step(ctx)
	st, _ = g.status()
	require.Equal(t, gateAlone, st)
	require.Equal(t, []string{"b", ""}, *recorded)
	require.NoError(t, g.waitAck(ctx, 1000))
}

// TestPairGateAckFailsWithoutTheTerm: an ack waiting for the standby gives
// up as soon as this member no longer holds its term.
func TestPairGateAckFailsWithoutTheTerm(t *testing.T) {
	l := openTestLog(t)
	_, err := l.Append([]byte{1})
	require.NoError(t, err)
	g, src, f, _ := newTestGate(t, l, true)
	src.set("b", 0)
	g.step(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.waitAck(context.Background(), 1) }()
	time.Sleep(50 * time.Millisecond)
	f.ok.Store(false)
	select {
	case err := <-done:
		require.ErrorIs(t, err, errNotPrimary)
	case <-time.After(5 * time.Second):
		t.Fatal("the ack kept waiting after the lease was gone")
	}
}

// TestFencedEngineRefusesOtherTerms: appends go through only in the term the
// node runs in, with the lease in force.
func TestFencedEngineRefusesOtherTerms(t *testing.T) {
	l := openTestLog(t)
	f := &fakeFence{}
	f.term.Store(3)
	f.ok.Store(true)
	e := &fencedEngine{Engine: l, fence: f, term: 3}
	_, err := e.Append([]byte{1})
	require.NoError(t, err)
	f.term.Store(4)
	_, err = e.Append([]byte{1})
	require.ErrorIs(t, err, errNotPrimary)
	f.term.Store(3)
	f.ok.Store(false)
	_, err = e.Append([]byte{1})
	require.ErrorIs(t, err, errNotPrimary)
	require.EqualValues(t, 1, l.NextOffset())
}

// TestPairGateDropsAStalledStandbyOnly: a standby that answers but does not
// move while acks wait is dropped after the timeout; one that keeps moving
// under constant load is not, however long acks keep waiting in turn.
func TestPairGateDropsAStalledStandbyOnly(t *testing.T) {
	l := openTestLog(t)
	g, src, _, recorded := newTestGate(t, l, true)
	ctx := context.Background()
	src.set("b", 0)
	g.step(ctx) // joining at 0
	g.step(ctx) // paired
	st, _ := g.status()
	require.Equal(t, gatePaired, st)

	// Constant load: always a waiter, the standby always a little behind
	// but moving.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			first, err := l.Append([]byte{1})
			if err != nil {
				return
			}
			go func() { _ = g.waitAck(ctx, first+1) }()
			time.Sleep(5 * time.Millisecond)
			src.set("b", first+1)
		}
	}()
	for i := 0; i < 30; i++ {
		time.Sleep(20 * time.Millisecond)
		g.step(ctx)
	}
	st, _ = g.status()
	require.Equal(t, gatePaired, st, "a standby keeping up under load was dropped")
	close(stop)
	wg.Wait()

	// Stalled: it answers (contact fresh) but holds nothing new.
	first, err := l.Append([]byte{1})
	require.NoError(t, err)
	_, held, _ := src.Replicated()
	go func() { _ = g.waitAck(ctx, first+1) }()
	for i := 0; i < 20; i++ {
		time.Sleep(20 * time.Millisecond)
		src.set("b", held)
		g.step(ctx)
	}
	st, _ = g.status()
	require.Equal(t, gateAlone, st)
	require.Equal(t, []string{"b", ""}, *recorded)
}

// TestPairGateAsyncBoundsTheLag: in async mode an ack waits only while the
// standby is more than maxLag records behind it.
func TestPairGateAsyncBoundsTheLag(t *testing.T) {
	l := openTestLog(t)
	g, src, _, _ := newTestGate(t, l, false)
	g.maxLag = 10
	ctx := context.Background()
	require.NoError(t, g.waitAck(ctx, 1000), "alone: nothing waits")
	src.set("b", 0)
	g.step(ctx)
	g.step(ctx)
	st, _ := g.status()
	require.Equal(t, gatePaired, st)
	require.NoError(t, g.waitAck(ctx, 10), "within the bound")
	wctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	require.ErrorIs(t, g.waitAck(wctx, 50), context.DeadlineExceeded, "40 records past the bound")
	cancel()
	src.set("b", 40)
	require.NoError(t, g.waitAck(ctx, 50))
}
