package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/engines"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const subject = "holdfast.ha.replicate"

// startNATS runs an in-process nats-server with the pair's max_payload and
// returns two in-process connections to it: the primary's and the standby's.
func startNATS(tb testing.TB) (primary, standby *nats.Conn) {
	tb.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		MaxPayload: 8 << 20,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready")
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	connect := func() *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL(), nats.InProcessServer(ns))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(nc.Close)
		return nc
	}
	return connect(), connect()
}

// openLog opens a native log in dir/log, closed at the end of the test.
func openLog(tb testing.TB, dir string, o buffer.Options) *buffer.Log {
	tb.Helper()
	o.Dir = filepath.Join(dir, "log")
	l, err := buffer.Open(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

// pair is a primary with its Source and a standby with its Follower.
type pair struct {
	pdir, sdir string
	plog       buffer.Engine
	slog       *buffer.Log
	src        *Source
	fol        *Follower
	term       atomic.Uint64 // the primary's term
	followTerm atomic.Uint64 // the term the standby follows
	reg        *prometheus.Registry
	pnc, snc   *nats.Conn

	cancel context.CancelFunc
	done   chan error
}

func newPair(t testing.TB, so SourceOptions, po buffer.Options) *pair {
	t.Helper()
	return newPairOn(t, "log", so, po)
}

// newPairOn is newPair with the primary's buffer of engine name.
func newPairOn(t testing.TB, name string, so SourceOptions, po buffer.Options) *pair {
	t.Helper()
	p := &pair{pdir: t.TempDir(), sdir: t.TempDir(), reg: prometheus.NewRegistry()}
	p.term.Store(3)
	p.followTerm.Store(3)
	p.pnc, p.snc = startNATS(t)
	po.Dir = filepath.Join(p.pdir, name)
	primary, err := engines.Open(name, po)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Close() })
	p.plog = primary
	p.slog = openLog(t, p.sdir, buffer.Options{})
	if so.NodeID == "" {
		so.NodeID = "site-a"
	}
	so.DataDir = p.pdir
	so.Term = func() (uint64, bool) { t := p.term.Load(); return t, t != 0 }
	src, err := NewSource(p.pnc, subject, p.plog, so)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	p.src = src
	return p
}

// startFollower starts a follower on the standby's log; stop ends it.
func (p *pair) startFollower(t testing.TB, o FollowerOptions) {
	t.Helper()
	p.startFollowerOn(t, p.slog, o)
}

// startFollowerOn starts a follower on buf.
func (p *pair) startFollowerOn(t testing.TB, buf buffer.Engine, o FollowerOptions) {
	t.Helper()
	if o.NodeID == "" {
		o.NodeID = "site-a"
	}
	o.Member, o.DataDir, o.Registerer = "b", p.sdir, p.reg
	o.Term = func() uint64 { return p.followTerm.Load() }
	p.fol = NewFollower(p.snc, subject, buf, o)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan error, 1)
	go func() { p.done <- p.fol.Run(ctx) }()
	t.Cleanup(func() { p.stop(t) })
}

func (p *pair) stop(t testing.TB) error {
	t.Helper()
	if p.cancel == nil {
		return nil
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		return err
	case <-time.After(testutil.WaitFor):
		t.Fatal("follower did not stop")
	}
	return nil
}

// caughtUp waits until the standby's log reaches the primary's next offset.
func (p *pair) caughtUp(t testing.TB) {
	t.Helper()
	testutil.Eventually(t, "the standby to catch up", func() bool {
		return p.slog.DurableOffset() == p.plog.NextOffset()
	})
}

// appendN appends n records of size bytes to l, each naming its index.
func appendN(tb testing.TB, l buffer.Engine, n, size int) {
	tb.Helper()
	const chunk = 1024
	batch := make([][]byte, 0, chunk)
	for i := range n {
		p := bytes.Repeat([]byte{'x'}, size)
		p[0] = event.TypeEvent
		copy(p[1:], fmt.Sprintf("%d:", l.NextOffset()+uint64(len(batch))))
		batch = append(batch, p)
		if len(batch) == chunk || i == n-1 {
			if _, err := l.Append(batch...); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// records reads every record of l below its durable offset.
func records(tb testing.TB, l buffer.Engine) map[uint64][]byte {
	tb.Helper()
	out := map[uint64][]byte{}
	r := l.NewReader(0)
	defer r.Close()
	for r.Position() < l.DurableOffset() {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		out[off] = bytes.Clone(p)
	}
	return out
}

// sameLog checks that the standby has the primary's next offset and holds at
// each offset below it what the primary holds there, or a hole where the
// primary holds nothing.
func sameLog(t *testing.T, primary, standby buffer.Engine) {
	t.Helper()
	if pn, sn := primary.NextOffset(), standby.NextOffset(); pn != sn {
		t.Fatalf("next offsets differ: primary %d, standby %d", pn, sn)
	}
	prec, srec := records(t, primary), records(t, standby)
	for off := uint64(0); off < primary.NextOffset(); off++ {
		pp, ok := prec[off]
		sp, sok := srec[off]
		switch {
		case !sok:
			t.Fatalf("standby holds nothing at %d", off)
		case ok && !bytes.Equal(pp, sp):
			t.Fatalf("offset %d: primary %q, standby %q", off, pp, sp)
		case !ok && !bytes.Equal(sp, []byte{event.TypeHole}):
			t.Fatalf("offset %d: primary holds nothing, standby %q (want a hole)", off, sp)
		}
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reports collects the reports a Source accepted.
type reports struct {
	mu  sync.Mutex
	got []string
}

func (r *reports) accept(member string, b []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, member+":"+string(b))
	return nil
}
