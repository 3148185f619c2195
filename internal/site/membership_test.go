package site

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor is how long a test waits for gossip to settle: generous, for a
// loaded machine.
const waitFor = 20 * time.Second

// eventually polls cond until it holds, failing the test after waitFor, and
// returns how long it took.
func eventually(t testing.TB, what string, cond func() bool, diag ...func() string) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > waitFor {
			var d string
			for _, f := range diag {
				d += f()
			}
			t.Fatalf("timed out after %v waiting for %s%s", waitFor, what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// logWriter sends a logger's lines to t.Log, and drops them once the test
// ended.
type logWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("SITE_TEST_LOG") == "" {
		return nil
	}
	w := &logWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("member", name)
}

func start(t testing.TB, o Options) *Membership {
	t.Helper()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Secret == nil {
		o.Secret = []byte("site secret for tests")
	}
	if o.HTTP == "" {
		o.HTTP = "http://" + o.NodeID + ".test:8080"
	}
	if o.Logger == nil {
		o.Logger = testLogger(t, o.NodeID)
	}
	m, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// startSite starts n members, each joining the first.
func startSite(t testing.TB, n int) []*Membership {
	t.Helper()
	ms := []*Membership{start(t, Options{NodeID: "node-1", Zone: "z1"})}
	for i := 2; i <= n; i++ {
		ms = append(ms, start(t, Options{NodeID: fmt.Sprintf("node-%d", i), Zone: fmt.Sprintf("z%d", i), Peers: []string{ms[0].Addr()}}))
	}
	return ms
}

func ids(ms []Member) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.NodeID+":"+m.State)
	}
	return strings.Join(s, ",")
}

func agree(ms []*Membership, want string) func() bool {
	return func() bool {
		for _, m := range ms {
			if ids(m.Members()) != want {
				return false
			}
		}
		return true
	}
}

func TestThreeMembersFindEachOther(t *testing.T) {
	ms := startSite(t, 3)
	took := eventually(t, "3 members agreeing", agree(ms, "node-1:alive,node-2:alive,node-3:alive"))
	t.Logf("agreed in %v", took)
	for _, m := range ms {
		for _, mb := range m.Members() {
			if mb.HTTP != "http://"+mb.NodeID+".test:8080" || mb.Zone != "z"+strings.TrimPrefix(mb.NodeID, "node-") {
				t.Errorf("%s sees %+v", m.Self().NodeID, mb)
			}
		}
	}
	if s := ms[1].Self(); s.NodeID != "node-2" || s.Zone != "z2" || s.State != StateAlive {
		t.Errorf("Self %+v", s)
	}

	// Every member's Assigner agrees on the owners.
	devs := devices(1000)
	for _, s := range Strategies {
		a := newAssigner(t, AssignOptions{Strategy: s, Rules: []SemanticRule{{Devices: []string{"sensor-00*"}, Nodes: []string{"node-3"}}}})
		for _, d := range devs {
			want, _ := a.Owner(ms[0].Members(), d)
			for _, m := range ms[1:] {
				if got, _ := a.Owner(m.Members(), d); got.NodeID != want.NodeID {
					t.Fatalf("%s: %s owned by %s at node-1, by %s at %s", s, d.ID, want.NodeID, got.NodeID, m.Self().NodeID)
				}
			}
		}
	}
}

func TestMetadataPropagates(t *testing.T) {
	ms := startSite(t, 3)
	eventually(t, "3 members agreeing", agree(ms, "node-1:alive,node-2:alive,node-3:alive"))
	drain(ms[0].Changes())
	l := Load{EventsPerSec: 1234.5, CPU: 0.75, Buffer: 0.5, LagRecords: 42}
	ms[2].SetLoad(l)
	eventually(t, "the load reaching the others", func() bool {
		for _, m := range ms {
			for _, mb := range m.Members() {
				if mb.NodeID == "node-3" && mb.Load != l {
					return false
				}
			}
		}
		return true
	})
	select {
	case <-ms[0].Changes():
	default:
		t.Error("no change signalled for a metadata update")
	}
	if got := ms[2].Self().Load; got != l {
		t.Errorf("Self load %+v", got)
	}
}

func drain(c <-chan struct{}) {
	select {
	case <-c:
	default:
	}
}

func TestKilledMemberIsDropped(t *testing.T) {
	for _, n := range []int{3, 8} {
		t.Run(fmt.Sprintf("%d members", n), func(t *testing.T) {
			if n > 3 && testing.Short() {
				t.Skip("8 members in -short")
			}
			ms := startSite(t, n)
			var all, rest []string
			for i := 1; i <= n; i++ {
				all = append(all, fmt.Sprintf("node-%d", i))
			}
			rest = all[:n-1]
			eventually(t, "members agreeing", agreeIDs(ms, strings.Join(all, ",")), func() string { return views(ms) })
			killed := time.Now()
			ms[n-1].Close() // no Leave: a kill
			eventually(t, "the killed member gone", agreeIDs(ms[:n-1], strings.Join(rest, ",")))
			t.Logf("%d members: a killed member was out of every other's Members() %v after the kill (FailureDetection %v)",
				n, time.Since(killed).Round(time.Millisecond), DefaultFailureDetection)
			for _, m := range ms[:n-1] {
				if st := m.All()[n-1]; st.NodeID != all[n-1] || st.State != StateDead {
					t.Errorf("%s: All() has %+v", m.Self().NodeID, st)
				}
			}
		})
	}
}

func agreeIDs(ms []*Membership, want string) func() bool {
	return func() bool {
		for _, m := range ms {
			if idList(m.Members()) != want {
				return false
			}
		}
		return true
	}
}

// views is every member's view, for a failure message.
func views(ms []*Membership) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "\n%s at %s sees %s", m.Self().NodeID, m.Addr(), ids(m.All()))
	}
	return b.String()
}

func TestLeftMemberIsLeft(t *testing.T) {
	ms := startSite(t, 3)
	eventually(t, "3 members agreeing", agree(ms, "node-1:alive,node-2:alive,node-3:alive"))
	if err := ms[1].Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node-2 gone", agree([]*Membership{ms[0], ms[2]}, "node-1:alive,node-3:alive"))
	if all := ids(ms[0].All()); all != "node-1:alive,node-2:left,node-3:alive" {
		t.Errorf("All() = %s", all)
	}
}

func TestWrongSecretCannotJoin(t *testing.T) {
	ms := startSite(t, 2)
	eventually(t, "2 members agreeing", agree(ms, "node-1:alive,node-2:alive"))
	bad := start(t, Options{NodeID: "intruder", Secret: []byte("another secret"), Peers: []string{ms[0].Addr()}})
	open := start(t, Options{NodeID: "open", Secret: []byte{}, Peers: []string{ms[0].Addr()}}) // none
	// Several join attempts (one a second) in which nothing may change.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range ms {
			if got := idList(m.Members()); got != "node-1,node-2" {
				t.Fatalf("%s sees %s", m.Self().NodeID, got)
			}
		}
		if got := idList(bad.Members()); got != "intruder" {
			t.Fatalf("intruder sees %s", got)
		}
		if got := idList(open.Members()); got != "open" {
			t.Fatalf("member without a secret sees %s", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestStartRefusesOpenGossipBeyondLoopback(t *testing.T) {
	for _, listen := range []string{"0.0.0.0:0", ":0", "10.1.2.3:7946"} {
		_, err := Start(context.Background(), Options{NodeID: "n", Listen: listen})
		if err == nil || !strings.Contains(err.Error(), "site.secret") {
			t.Errorf("Listen %s without a secret: %v, want an error naming site.secret", listen, err)
		}
	}
	for _, listen := range []string{"127.0.0.1:0", "localhost:0"} {
		m, err := Start(context.Background(), Options{NodeID: "n", Listen: listen})
		if err != nil {
			t.Fatalf("%s without a secret: %v", listen, err)
		}
		m.Close()
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, o := range map[string]Options{
		"no node id":    {Listen: "127.0.0.1:0"},
		"bad listen":    {NodeID: "n", Listen: "127.0.0.1"},
		"bad peer":      {NodeID: "n", Listen: "127.0.0.1:0", Peers: []string{"host"}},
		"fast fd":       {NodeID: "n", Listen: "127.0.0.1:0", FailureDetection: time.Millisecond},
		"long zone":     {NodeID: "n", Listen: "127.0.0.1:0", Zone: strings.Repeat("z", 400)},
		"bad advertise": {NodeID: "n", Listen: "127.0.0.1:0", Advertise: "x"},
		"advertise any": {NodeID: "n", Listen: "127.0.0.1:0", Advertise: "0.0.0.0:7946"},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMembersStartInAnyOrder(t *testing.T) {
	// node-2 is told of node-1 before node-1 is there: it keeps trying.
	first := start(t, Options{NodeID: "node-1"})
	addr := first.Addr()
	first.Close()
	second := start(t, Options{NodeID: "node-2", Peers: []string{addr}})
	time.Sleep(1500 * time.Millisecond) // at least one failed attempt
	again := start(t, Options{NodeID: "node-1", Listen: addr})
	eventually(t, "the late first member joined", agree([]*Membership{again, second}, "node-1:alive,node-2:alive"))
}

func TestMetaRoundTrip(t *testing.T) {
	md := meta{HTTP: "http://10.0.0.5:8080", MQTT: "10.0.0.5:1883", Zone: "north", Load: Load{EventsPerSec: 1.5, CPU: 0.25, Buffer: 0.125, LagRecords: 7}}
	b, err := md.encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes: %q", len(b), b)
	got, err := decodeMeta(b)
	if err != nil || got != md {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	if _, err := decodeMeta(append([]byte{2}, b[1:]...)); err == nil {
		t.Error("version 2 decoded")
	}
	if k, err := GossipKey([]byte("s")); err != nil || len(k) != KeySize {
		t.Fatalf("key %x, %v", k, err)
	}
}

// syncBuffer is a log destination tests read while members write to it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

func TestDuplicateNodeIDIsLogged(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	first := start(t, Options{NodeID: "node-1", Logger: logger})
	second := start(t, Options{NodeID: "node-2", Peers: []string{first.Addr()}})
	eventually(t, "2 members agreeing", func() bool {
		return idList(first.Members()) == "node-1,node-2" && idList(second.Members()) == "node-1,node-2"
	})
	dup := start(t, Options{NodeID: "node-1", Logger: logger, Peers: []string{second.Addr()}})
	eventually(t, "the duplicate node id logged as an error", func() bool {
		return strings.Contains(logs.String(), "level=ERROR msg=\"two site members claim one node id")
	})
	t.Logf("logged: %s", logs.String())
	if got := first.Self(); got.NodeID != "node-1" {
		t.Errorf("first member is %+v", got)
	}
	_ = dup
}

func idList(ms []Member) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.NodeID)
	}
	return strings.Join(s, ",")
}
