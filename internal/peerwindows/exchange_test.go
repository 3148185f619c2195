package peerwindows_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/peerwindows"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/window"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	t0       = time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC).UnixMilli()
	sizes    = []time.Duration{time.Second, 5 * time.Second}
	lateness = 300 * time.Millisecond
)

// runNATS starts an in-process NATS server, the pair's member link, and
// returns its URL.
func runNATS(t *testing.T) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, MaxPayload: 8 << 20})
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	require.True(t, ns.ReadyForConnections(10*time.Second))
	return ns.ClientURL()
}

// node is one member of an active-active pair: its own log, store and
// processor, its own connection to the member link.
type node struct {
	name string
	st   *store.Store
	proc *process.Processor
	nc   *nats.Conn
	stop func() // stops serving partials
	http http.Handler
	evs  []event.Event
}

func subject(name string) string { return "holdfast.pair.windows." + name }

func startNode(t *testing.T, url, name string) *node {
	t.Helper()
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: vfs.NewMem(), SegmentBytes: 64 << 10, MaxBytes: 1 << 30})
	require.NoError(t, err)
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	p, err := process.New(st, process.Options{
		Window:      window.Options{Sizes: sizes, AllowedLateness: lateness},
		Workers:     2,
		IdleTimeout: time.Hour, // closes are driven by events alone
	})
	require.NoError(t, err)
	p.Start()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	n := &node{name: name, st: st, proc: p, nc: nc}
	n.stop, err = peerwindows.Serve(nc, subject(name), peerwindows.Local{Store: st, Open: p.OpenPartials})
	require.NoError(t, err)
	t.Cleanup(func() {
		n.stop()
		nc.Close()
		p.Close()
		l.Close()
	})
	return n
}

// pairWith wires n's GET /v1/windows to the other node, as the node does.
func (n *node) pairWith(other string, timeout time.Duration) {
	n.http = api.New(api.Options{
		Ingest: http.NotFoundHandler(), Gatherer: prometheus.NewRegistry(), Store: n.st,
		OpenWindows: n.proc.Open, OpenPartials: n.proc.OpenPartials, PeerTimeout: timeout,
		Peer: func(ctx context.Context, q peerwindows.Query) (peerwindows.Page, error) {
			return peerwindows.Fetch(ctx, n.nc, subject(other), q)
		},
	})
}

// truth is a window computed by brute force from the events of both nodes.
type truth struct {
	count          uint64
	sum, min, max  float64
	last           float64
	lastTS         int64
	values         []float64
	final          bool
	closedOn, onAt map[string]bool
}

func key(stream, dev string, size time.Duration, start int64) string {
	if dev == "" {
		dev = "*"
	}
	return fmt.Sprintf("%s/%s/%d/%d", stream, dev, size.Milliseconds(), start)
}

// bruteForce computes every window of the site from the nodes' events. Each
// node saw its events in event-time order, so none was late; a window is
// closed on a node once that node's watermark for the stream (its highest
// event time less the lateness) reaches the window's end, and final when it
// is closed on every node that has it.
func bruteForce(nodes ...*node) map[string]*truth {
	out := map[string]*truth{}
	for _, n := range nodes {
		wm := map[string]int64{}
		for _, e := range n.evs {
			wm[e.Stream] = max(wm[e.Stream], e.TS-lateness.Milliseconds())
		}
		for _, e := range n.evs {
			for _, size := range sizes {
				sz := size.Milliseconds()
				start := e.TS - e.TS%sz
				for _, dev := range []string{e.DeviceID, ""} {
					k := key(e.Stream, dev, size, start)
					w := out[k]
					if w == nil {
						w = &truth{min: math.Inf(1), max: math.Inf(-1), lastTS: math.MinInt64, closedOn: map[string]bool{}, onAt: map[string]bool{}}
						out[k] = w
					}
					w.count++
					w.sum += e.Value
					w.min, w.max = min(w.min, e.Value), max(w.max, e.Value)
					if e.TS > w.lastTS {
						w.last, w.lastTS = e.Value, e.TS
					}
					w.values = append(w.values, e.Value)
					w.onAt[n.name] = true
					w.closedOn[n.name] = start+sz <= wm[e.Stream]
				}
			}
		}
	}
	for _, w := range out {
		w.final = len(w.closedOn) > 0
		for _, c := range w.closedOn {
			w.final = w.final && c
		}
	}
	return out
}

// feed gives each event, in event-time order, to one node at random: the
// load balancer. Event times are distinct, values whole numbers, so that
// sums are exact and the last value is unambiguous.
func feed(t *testing.T, rng *rand.Rand, n int, nodes ...*node) {
	t.Helper()
	batches := make([][]event.Event, len(nodes))
	for i := range n {
		e := event.Event{
			DeviceID: fmt.Sprintf("d%d", rng.IntN(4)),
			Stream:   []string{"temp", "hum"}[rng.IntN(2)],
			TS:       t0 + int64(i)*7 + rng.Int64N(3),
			Value:    float64(rng.IntN(2001) - 1000),
		}
		j := rng.IntN(len(nodes))
		batches[j] = append(batches[j], e)
		nodes[j].evs = append(nodes[j].evs, e)
	}
	for j, b := range batches {
		for i := 0; i < len(b); i += 100 {
			_, err := nodes[j].st.Append(context.Background(), b[i:min(i+100, len(b))])
			require.NoError(t, err)
		}
	}
}

// settled waits until every node has written the result of every window
// the brute force says it closed, and has no output in flight.
func settled(t *testing.T, want map[string]*truth, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		closed := 0
		for _, w := range want {
			if w.closedOn[n.name] {
				closed++
			}
		}
		testutil.Eventually(t, n.name+" wrote its closed windows", func() bool {
			got := 0
			require.NoError(t, n.st.EachWindow(store.WindowQuery{DeviceID: "*"}, func(store.StoredWindow) bool { got++; return true }))
			s := n.proc.Status()
			return got == closed && s.Lag == 0 && !s.Replaying
		})
	}
}

type windowsPage struct {
	Windows   []testutil.WindowJSON `json:"windows"`
	Next      string                `json:"next"`
	Scope     string                `json:"scope"`
	Partial   bool                  `json:"partial"`
	PeerError string                `json:"peer_error"`
}

func get(t *testing.T, h http.Handler, query string) windowsPage {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/windows?"+query, nil))
	body, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, rec.Code, "%s", body)
	var pg windowsPage
	require.NoError(t, json.Unmarshal(body, &pg), "%s", body)
	return pg
}

// allPages pages through GET /v1/windows.
func allPages(t *testing.T, h http.Handler, query string) []testutil.WindowJSON {
	t.Helper()
	var out []testutil.WindowJSON
	cursor := ""
	for range 1000 {
		pg := get(t, h, query+cursor)
		require.Equal(t, "site", pg.Scope)
		require.False(t, pg.Partial, "peer error: %s", pg.PeerError)
		out = append(out, pg.Windows...)
		if pg.Next == "" {
			return out
		}
		cursor = "&cursor=" + pg.Next
	}
	t.Fatal("paging does not end")
	return nil
}

func requireSite(t *testing.T, want map[string]*truth, got []testutil.WindowJSON) {
	t.Helper()
	ids := map[string]bool{}
	for _, w := range got {
		require.False(t, ids[w.ID], "window %s answered twice", w.ID)
		ids[w.ID] = true
		r := want[w.ID]
		require.NotNil(t, r, "window %s answered but not in the brute force", w.ID)
		require.Equal(t, r.count, w.Count, w.ID)
		require.Equal(t, r.sum, w.Sum, w.ID)
		require.Equal(t, r.min, w.Min, w.ID)
		require.Equal(t, r.max, w.Max, w.ID)
		require.Equal(t, r.last, w.Last, w.ID)
		require.Equal(t, min(max(r.sum/float64(r.count), r.min), r.max), w.Mean, w.ID)
		require.Equal(t, r.final, w.Final, "%s final: closed on %v", w.ID, r.closedOn)
		for q, got := range map[float64]float64{0.5: w.P50, 0.95: w.P95, 0.99: w.P99} {
			v := slices.Sorted(slices.Values(r.values))
			exact := v[int(q*float64(len(v)-1))]
			require.LessOrEqual(t, math.Abs(got-exact), 0.01*math.Abs(exact)+1e-9, "%s p%v: got %v, exact %v", w.ID, q*100, got, exact)
			require.True(t, got >= r.min && got <= r.max, "%s p%v outside [min, max]", w.ID, q*100)
		}
	}
	require.Len(t, ids, len(want), "every window of the site is answered")
}

// TestSiteWindowsAcrossThePair: two nodes ingest different events of the
// same streams and devices; either answers GET /v1/windows for the site —
// paged, open and closed windows alike — equal to a brute force over all the
// events, and both answer the same. When one node is gone the other answers
// its own windows, marked partial.
func TestSiteWindowsAcrossThePair(t *testing.T) {
	url := runNATS(t)
	a, b := startNode(t, url, "a"), startNode(t, url, "b")
	a.pairWith("b", 2*time.Second)
	b.pairWith("a", 2*time.Second)
	feed(t, rand.New(rand.NewPCG(1, 2)), 3000, a, b)
	// a alone moves on: it closes windows b still has open.
	late := []event.Event{
		{DeviceID: "d9", Stream: "temp", TS: t0 + 3000*7 + 2500, Value: 5},
		{DeviceID: "d9", Stream: "hum", TS: t0 + 3000*7 + 2500, Value: 6},
	}
	_, err := a.st.Append(context.Background(), late)
	require.NoError(t, err)
	a.evs = append(a.evs, late...)
	want := bruteForce(a, b)
	settled(t, want, a, b)
	var open, mixed int
	for _, w := range want {
		if !w.final {
			open++
		}
		if len(w.onAt) == 2 && w.closedOn["a"] != w.closedOn["b"] {
			mixed++
		}
	}
	require.NotZero(t, open, "some windows are open")
	require.NotZero(t, mixed, "some windows are closed on one node and open on the other")
	t.Logf("%d windows, %d not final, %d closed on one node and open on the other", len(want), open, mixed)

	fromA := allPages(t, a.http, "device_id=*&limit=37")
	requireSite(t, want, fromA)
	end := func(w testutil.WindowJSON) time.Time {
		start, err := time.Parse(time.RFC3339Nano, w.Start)
		require.NoError(t, err)
		size, err := time.ParseDuration(w.Size)
		require.NoError(t, err)
		return start.Add(size)
	}
	for i := 1; i < len(fromA); i++ {
		require.False(t, end(fromA[i]).After(end(fromA[i-1])), "most recent first")
	}
	fromB := allPages(t, b.http, "device_id=*&limit=500")
	require.Equal(t, fromA, fromB, "both nodes answer the same")

	// Filters: one stream's windows; its site-wide 5 s windows in a time range.
	from, to := t0+4000, t0+12_000
	temp, sub := map[string]*truth{}, map[string]*truth{}
	for id, w := range want {
		var stream, dev string
		var sz, start int64
		_, err = fmt.Sscanf(replaceSlashes(id), "%s %s %d %d", &stream, &dev, &sz, &start)
		require.NoError(t, err)
		if stream == "temp" {
			temp[id] = w
		}
		if stream == "temp" && dev == "*" && sz == 5000 && start < to && start+sz > from {
			sub[id] = w
		}
	}
	require.NotEmpty(t, sub)
	requireSite(t, temp, allPages(t, b.http, "stream=temp&device_id=*&limit=9"))
	requireSite(t, sub, allPages(t, a.http, fmt.Sprintf("stream=temp&size=5s&from=%d&to=%d&limit=1", from, to)))

	// scope=node is the node's own answer, as without a pair.
	node := get(t, a.http, "device_id=*&scope=node&limit=10000")
	require.Empty(t, node.Scope)
	for _, w := range node.Windows {
		require.LessOrEqual(t, w.Count, want[w.ID].count)
	}

	// b is gone: a answers its own windows, marked partial, at once.
	b.stop()
	pg := get(t, a.http, "device_id=*&limit=10000")
	require.True(t, pg.Partial)
	require.NotEmpty(t, pg.PeerError)
	onA := 0
	for _, w := range want {
		if w.onAt["a"] {
			onA++
		}
	}
	require.Len(t, pg.Windows, onA)
}

func replaceSlashes(id string) string {
	b := []byte(id)
	for i := range b {
		if b[i] == '/' {
			b[i] = ' '
		}
	}
	return string(b)
}

// slowSource answers only when the test ends.
type slowSource struct{ done chan struct{} }

func (s slowSource) Partials(ctx context.Context, q peerwindows.Query) (peerwindows.Page, error) {
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	return peerwindows.Page{}, ctx.Err()
}

// TestSiteWindowsPeerTooSlow: a peer that does not answer within the timeout
// leaves the node's own windows, marked partial, never an error.
func TestSiteWindowsPeerTooSlow(t *testing.T) {
	url := runNATS(t)
	a := startNode(t, url, "a")
	a.pairWith("slow", 200*time.Millisecond)
	slow := slowSource{done: make(chan struct{})}
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	stop, err := peerwindows.Serve(nc, subject("slow"), slow)
	require.NoError(t, err)
	defer func() { close(slow.done); stop(); nc.Close() }()

	feed(t, rand.New(rand.NewPCG(3, 4)), 500, a)
	want := bruteForce(a)
	settled(t, want, a)
	pg := get(t, a.http, "device_id=*&limit=10000")
	require.True(t, pg.Partial)
	require.Contains(t, pg.PeerError, "no answer")
	requireSite(t, want, pg.Windows)
}
