// Package site drives sites of the real holdfast binary: several nodes that
// gossip their membership, a site aggregator (`holdfast aggregate`) and an
// embedded cloud, all on 127.0.0.1, with simulated HTTP and MQTT 5 devices,
// nodes and the aggregator killed with SIGKILL. It is its own package so that
// `go test ./...` runs it beside the other end-to-end packages.
package site

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/testutil/cloudtest"
)

var binary string

func TestMain(m *testing.M) { os.Exit(testutil.MainWithHoldfast(m, "../../cmd/holdfast", &binary)) }

// secret is the site secret of these tests.
const secret = "site-secret-of-the-tests"

// failureDetection is the nodes' site.failure_detection.
const failureDetection = 2 * time.Second

// sizes and lateness are the nodes' windows.
var sizes = []time.Duration{time.Second, 5 * time.Second}

const lateness = 500 * time.Millisecond

// nodeConfig: small windows that close within the test, checkpoints every
// second, quick syncs, quick failure detection.
const nodeConfig = `
windows:
  sizes: [1s, 5s]
  allowed_lateness: 500ms
  idle_timeout: 1h
checkpoints:
  interval: 1s
cloud:
  max_delay: 20ms
site:
  failure_detection: 2s
  forward_timeout: 3s
`

// proc is one process of the site: a node or the aggregator.
type proc struct {
	testutil.Proc
	name   string // node id, or "agg"
	dir    string
	http   string
	mqtt   string // nodes only
	gossip string // nodes: site.listen
	nats   string // the aggregator: --listen
	args   []string
	env    []string     // more environment, after the site secret
	client *http.Client // nil: plain HTTP without a token (quick)
	scheme string       // "https" with security.tls; default http
}

func (p *proc) logs() string  { return p.Logs() }
func (p *proc) running() bool { return p.Running() }
func (p *proc) kill()         { p.Kill() }

// start runs the process and waits until its HTTP listener answers.
func (p *proc) start(t *testing.T) {
	t.Helper()
	p.Binary, p.Args = binary, p.args
	p.Env = append([]string{"HOLDFAST_SITE_SECRET=" + secret}, p.env...)
	p.Start(t)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !p.running() {
			t.Fatalf("%s exited:\n%s", p.name, p.logs())
		}
		resp, err := p.cl().Get(p.base() + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not answering after 60s:\n%s", p.name, p.logs())
}

var quick = &http.Client{Timeout: 3 * time.Second}

// cl is the client that reaches p: its TLS and API token, if it has them.
func (p *proc) cl() *http.Client {
	if p.client != nil {
		return p.client
	}
	return quick
}

// base is p's HTTP base URL.
func (p *proc) base() string {
	if p.scheme != "" {
		return p.scheme + "://" + p.http
	}
	return "http://" + p.http
}

// freeAddr is a fixed address for a process to listen on (TCP and UDP).
func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

// siteT is a site under test: a cloud, perhaps an aggregator, nodes.
type siteT struct {
	dir   string
	cloud *cloud.Server
	cfg   string // the nodes' config file
	agg   *proc
	nodes []*proc
	extra []string   // arguments of every node
	bg    chan error // playBackground's result
}

type siteOptions struct {
	aggregator bool
	config     string // appended to nodeConfig
	extra      []string
}

func newSite(t *testing.T, o siteOptions) *siteT {
	t.Helper()
	dir := t.TempDir()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	s := &siteT{dir: dir, cloud: srv, cfg: filepath.Join(dir, "holdfast.yaml"), extra: o.extra}
	require.NoError(t, os.WriteFile(s.cfg, []byte(nodeConfig+o.config), 0o600))
	if o.aggregator {
		s.agg = &proc{name: "agg", dir: filepath.Join(dir, "agg"), http: freeAddr(t), nats: freeAddr(t)}
		s.agg.args = []string{"aggregate", "--data-dir", s.agg.dir, "--listen", s.agg.nats, "--http-addr", s.agg.http,
			"--cloud-url", srv.URL()}
		s.agg.start(t)
	}
	return s
}

// addNode starts one more node, joining through the nodes already there.
func (s *siteT) addNode(t *testing.T, args ...string) *proc {
	t.Helper()
	return s.addNodeWith(t, nil, args...)
}

// addNodeWith is addNode with shape applied to the node before it starts.
func (s *siteT) addNodeWith(t *testing.T, shape func(*proc), args ...string) *proc {
	t.Helper()
	id := fmt.Sprintf("n%d", len(s.nodes)+1)
	n := &proc{name: id, dir: filepath.Join(s.dir, id), http: freeAddr(t), mqtt: freeAddr(t), gossip: freeAddr(t)}
	if shape != nil {
		shape(n)
	}
	var peers []string
	for _, o := range s.nodes {
		peers = append(peers, o.gossip)
	}
	n.args = []string{"run", "--config", s.cfg, "--data-dir", n.dir, "--node-id", id, "--http-addr", n.http,
		"--mqtt-addr", n.mqtt, "--site-listen", n.gossip, "--cloud-url", s.cloud.URL()}
	if len(peers) > 0 {
		n.args = append(n.args, "--site-peers", strings.Join(peers, ","))
	}
	if s.agg != nil {
		n.args = append(n.args, "--aggregator", "nats://"+s.agg.nats)
	}
	n.args = append(n.args, s.extra...)
	n.args = append(n.args, args...)
	s.nodes = append(s.nodes, n)
	n.start(t)
	return n
}

// live are the nodes running.
func (s *siteT) live() []*proc {
	var out []*proc
	for _, n := range s.nodes {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

func (s *siteT) byHTTP(hostport string) *proc {
	for _, n := range s.nodes {
		if n.http == hostport {
			return n
		}
	}
	return nil
}

func (s *siteT) byMQTT(hostport string) *proc {
	for _, n := range s.nodes {
		if n.mqtt == hostport {
			return n
		}
	}
	return nil
}

// member is one element of the site section's members.
type member struct {
	NodeID string `json:"node_id"`
	HTTP   string `json:"http"`
	MQTT   string `json:"mqtt"`
	Zone   string `json:"zone"`
	State  string `json:"state"`
	Load   struct {
		EventsPerSec float64 `json:"events_per_s"`
	} `json:"load"`
}

type nodeStatus struct {
	Site *struct {
		Members []member `json:"members"`
	} `json:"site"`
	Sinks []struct {
		Sink       string `json:"sink"`
		State      string `json:"state"`
		LagRecords uint64 `json:"lag_records"`
	} `json:"sinks"`
	Processing struct {
		Replaying bool   `json:"replaying"`
		Lag       uint64 `json:"lag_records"`
	} `json:"processing"`
}

func (p *proc) status() (nodeStatus, error) {
	var s nodeStatus
	resp, err := p.cl().Get(p.base() + "/v1/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return s, fmt.Errorf("status %d", resp.StatusCode)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// alive are the members p sees alive (or suspect), by node id.
func (p *proc) alive() ([]string, error) {
	st, err := p.status()
	if err != nil {
		return nil, err
	}
	if st.Site == nil {
		return nil, fmt.Errorf("%s: no site section", p.name)
	}
	var ids []string
	for _, m := range st.Site.Members {
		if m.State == "alive" || m.State == "suspect" {
			ids = append(ids, m.NodeID)
		}
	}
	return ids, nil
}

// converged waits until every live node sees exactly the live nodes.
func (s *siteT) converged(t *testing.T, timeout time.Duration) {
	t.Helper()
	var want []string
	for _, n := range s.live() {
		want = append(want, n.name)
	}
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		var last string
		for _, n := range s.live() {
			ids, err := n.alive()
			if err != nil || strings.Join(ids, ",") != strings.Join(want, ",") {
				ok = false
				last = fmt.Sprintf("%s sees %v (%v)", n.name, ids, err)
				break
			}
		}
		if ok {
			return
		}
		require.True(t, time.Now().Before(deadline), "membership did not converge on %v within %v: %s", want, timeout, last)
		time.Sleep(100 * time.Millisecond)
	}
}

// owner asks p where device belongs.
func (p *proc) owner(device, zone string) (string, error) {
	u := p.base() + "/v1/assign?device_id=" + url.QueryEscape(device)
	if zone != "" {
		u += "&zone=" + url.QueryEscape(zone)
	}
	resp, err := p.cl().Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var a struct {
		DeviceID string `json:"device_id"`
		NodeID   string `json:"node_id"`
		HTTP     string `json:"http"`
		MQTT     string `json:"mqtt"`
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		return "", err
	}
	if a.DeviceID != device {
		return "", fmt.Errorf("asked for %s, answered for %s", device, a.DeviceID)
	}
	return a.NodeID, nil
}

// owners asks p for the owner of every device.
func (p *proc) owners(t *testing.T, devices []string) map[string]string {
	t.Helper()
	out := make(map[string]string, len(devices))
	for _, d := range devices {
		o, err := p.owner(d, "")
		require.NoError(t, err, "%s: /v1/assign?device_id=%s", p.name, d)
		out[d] = o
	}
	return out
}

// ledger records the events sent and acknowledged.
type ledger struct {
	mu        sync.Mutex
	sent      map[string]bool
	acked     map[string]string // id -> node that acknowledged
	redirects int
}

func newLedger() *ledger { return &ledger{sent: map[string]bool{}, acked: map[string]string{}} }

func (l *ledger) send(id string) { l.mu.Lock(); l.sent[id] = true; l.mu.Unlock() }
func (l *ledger) ack(id, node string) {
	l.mu.Lock()
	l.acked[id] = node
	l.mu.Unlock()
}
func (l *ledger) redirected() { l.mu.Lock(); l.redirects++; l.mu.Unlock() }

func (l *ledger) counts() (sent, acked, redirects int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sent), len(l.acked), l.redirects
}

// event is one device event, its value whole (exact sums in any order).
func event(id, device string, seq int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"device_id":%q,"stream":"temp","ts":%d,"value":%d}`, id, device, time.Now().UnixMilli(), seq%100)
}

var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// httpDevice sends n events, each until acknowledged, starting at target:
// on a 307 it follows Location (counting the redirect), on an error it
// tries another live node. It returns the node it ended at.
func (s *siteT) httpDevice(l *ledger, name string, target *proc, from, n int) (*proc, error) {
	for seq := from; seq < from+n; seq++ {
		id := fmt.Sprintf("%s-%d", name, seq)
		body := event(id, name, seq)
		l.send(id)
		u := "http://" + target.http + "/v1/events"
		for attempt := 0; ; attempt++ {
			if attempt > 200 {
				return target, fmt.Errorf("%s: event %s not acknowledged after 200 attempts", name, id)
			}
			resp, err := noRedirect.Post(u, "application/json", bytes.NewReader(body))
			if err != nil {
				live := s.live()
				target = live[rand.IntN(len(live))]
				u = "http://" + target.http + "/v1/events"
				time.Sleep(50 * time.Millisecond)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusTemporaryRedirect {
				l.redirected()
				loc, err := url.Parse(resp.Header.Get("Location"))
				if err != nil || s.byHTTP(loc.Host) == nil {
					return target, fmt.Errorf("%s: 307 to %q, no node of the site", name, resp.Header.Get("Location"))
				}
				target, u = s.byHTTP(loc.Host), loc.String()
				continue
			}
			if resp.StatusCode == 200 {
				l.ack(id, target.name)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return target, nil
}

// mqttDevice connects as an MQTT 5 client to target, follows a CONNACK
// 0x9C to the server it names, and publishes n QoS 1 events, each until its
// PUBACK, reconnecting to a live node when the connection drops.
func (s *siteT) mqttDevice(l *ledger, name string, target *proc, from, n int) (*proc, error) {
	var c *paho.Client
	disconnect := func() {
		if c != nil {
			c.Disconnect(&paho.Disconnect{})
			c = nil
		}
	}
	defer disconnect()
	connect := func() error {
		for hops := 0; hops < 5; hops++ {
			conn, err := net.DialTimeout("tcp", target.mqtt, 2*time.Second)
			if err != nil {
				return err
			}
			cl := paho.NewClient(paho.ClientConfig{Conn: conn})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ca, err := cl.Connect(ctx, &paho.Connect{ClientID: name, KeepAlive: 30, CleanStart: true})
			cancel()
			if err == nil {
				c = cl
				return nil
			}
			if ca != nil && ca.ReasonCode == 0x9C && ca.Properties != nil {
				l.redirected()
				next := s.byMQTT(ca.Properties.ServerReference)
				if next == nil {
					return fmt.Errorf("CONNACK 0x9C to %q, no node of the site", ca.Properties.ServerReference)
				}
				target = next
				continue
			}
			return err
		}
		return fmt.Errorf("redirected 5 times")
	}
	for seq := from; seq < from+n; seq++ {
		id := fmt.Sprintf("%s-%d", name, seq)
		body := event(id, name, seq)
		l.send(id)
		for attempt := 0; ; attempt++ {
			if attempt > 100 {
				return target, fmt.Errorf("%s: event %s not acknowledged after 100 attempts", name, id)
			}
			if c == nil {
				if err := connect(); err != nil {
					live := s.live()
					target = live[rand.IntN(len(live))]
					time.Sleep(100 * time.Millisecond)
					continue
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			pr, err := c.Publish(ctx, &paho.Publish{Topic: "devices/" + name + "/temp", QoS: 1, Payload: body})
			cancel()
			if err == nil && pr != nil && pr.ReasonCode < 0x80 {
				l.ack(id, target.name)
				break
			}
			disconnect()
			time.Sleep(50 * time.Millisecond)
		}
	}
	return target, nil
}

// device is one simulated device and the node it last talked to.
type device struct {
	name   string
	mqtt   bool
	target *proc
}

// devices makes n devices, one in mqttEvery speaking MQTT 5, each starting
// at a random node.
func (s *siteT) devices(n, mqttEvery int) []*device {
	out := make([]*device, n)
	live := s.live()
	for i := range out {
		out[i] = &device{name: fmt.Sprintf("dev%04d", i), mqtt: i%mqttEvery == 0, target: live[rand.IntN(len(live))]}
	}
	return out
}

// play has every device send n events, from sequence number from, with at
// most par devices at once.
func (s *siteT) play(t *testing.T, l *ledger, devs []*device, from, n, par int) {
	t.Helper()
	require.NoError(t, s.playErr(l, devs, from, n, par))
}

// playBackground is play on another goroutine; waitPlay waits for it.
func (s *siteT) playBackground(l *ledger, devs []*device, from, n, par int) {
	s.bg = make(chan error, 1)
	go func() { s.bg <- s.playErr(l, devs, from, n, par) }()
}

func (s *siteT) waitPlay(t *testing.T) {
	t.Helper()
	require.NoError(t, <-s.bg)
}

func (s *siteT) playErr(l *ledger, devs []*device, from, n, par int) error {
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	errs := make(chan error, len(devs))
	for _, d := range devs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var err error
			if d.target == nil || !d.target.running() {
				live := s.live()
				d.target = live[rand.IntN(len(live))]
			}
			if d.mqtt {
				d.target, err = s.mqttDevice(l, d.name, d.target, from, n)
			} else {
				d.target, err = s.httpDevice(l, d.name, d.target, from, n)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs // nil when closed empty
}

// closeWindows stores, on every live node, one event far ahead of the
// others (the redirected parameter keeps it on that node): it closes every
// earlier window there.
func (s *siteT) closeWindows(t *testing.T) {
	t.Helper()
	ts := time.Now().Add(time.Minute).UnixMilli()
	for _, n := range s.live() {
		body := fmt.Sprintf(`{"id":"closer-%s-%d","device_id":"closer-%s","stream":"temp","ts":%d,"value":0}`, n.name, ts, n.name, ts)
		resp, err := noRedirect.Post("http://"+n.http+"/v1/events?redirected=test", "application/json", strings.NewReader(body))
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, 200, resp.StatusCode, "%s: %s", n.name, b)
	}
}

type storedEvent = testutil.RawEvent

func (p *proc) getJSON(t *testing.T, u string, into any) {
	t.Helper()
	resp, err := p.cl().Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, u)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(into))
}

// events reads every event p holds, in offset order.
func (p *proc) events(t *testing.T) []storedEvent {
	t.Helper()
	return p.eventsOf(t, "")
}

// eventsOf reads the events p holds of device ("": of every device).
func (p *proc) eventsOf(t *testing.T, device string) []storedEvent {
	t.Helper()
	var out []storedEvent
	cursor := ""
	for {
		u := p.base() + "/v1/events?limit=10000"
		if device != "" {
			u += "&device_id=" + url.QueryEscape(device)
		}
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		var page struct {
			Events []storedEvent `json:"events"`
			Next   string        `json:"next"`
		}
		p.getJSON(t, u, &page)
		out = append(out, page.Events...)
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
}

// caughtUp waits until every live node has processed its log and synced
// everything to every sink.
func (s *siteT) caughtUp(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, n := range s.live() {
		for {
			st, err := n.status()
			done := err == nil && !st.Processing.Replaying && st.Processing.Lag == 0
			for _, sk := range st.Sinks {
				done = done && sk.LagRecords == 0
			}
			if done {
				break
			}
			require.True(t, time.Now().Before(deadline), "%s did not catch up within %v: %+v %v", n.name, timeout, st, err)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// requireAcked checks, over every node's events, that each acknowledged
// event is stored exactly once in the site and nothing unsent is stored,
// with one exception: an event a node killed with SIGKILL had stored but
// not acknowledged, which its device then sent again to another node (no
// node outlives a kill to tell the device; an HA pair per node is what
// closes that gap). Such events must each have one copy on a killed node,
// the other on the node that acknowledged it; at most maxInFlight of them.
// It returns each node's events.
func (s *siteT) requireAcked(t *testing.T, l *ledger, killed []string, maxInFlight int) map[string][]storedEvent {
	t.Helper()
	byNode := map[string][]storedEvent{}
	where := map[string]string{}
	retried := 0
	for _, n := range s.nodes {
		evs := n.events(t)
		byNode[n.name] = evs
		for _, e := range evs {
			if strings.HasPrefix(e.ID, "closer-") {
				continue
			}
			prev, dup := where[e.ID]
			if dup {
				l.mu.Lock()
				by := l.acked[e.ID]
				l.mu.Unlock()
				onKilled := slices.Contains(killed, prev) && by == n.name || slices.Contains(killed, n.name) && by == prev
				require.True(t, onKilled, "event %s stored twice: on %s and on %s (acknowledged by %s)", e.ID, prev, n.name, by)
				retried++
				continue
			}
			where[e.ID] = n.name
		}
	}
	if len(killed) > 0 {
		t.Logf("%d events were in flight at a killed node (stored there, unacknowledged) and sent again elsewhere by their devices", retried)
	}
	require.LessOrEqual(t, retried, maxInFlight, "more events stored twice than could have been in flight at the kill")
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, by := range l.acked {
		_, ok := where[id]
		require.True(t, ok, "acknowledged event %s (by %s) is in no node's buffer", id, by)
	}
	for id := range where {
		require.True(t, l.sent[id], "stored event %s was never sent", id)
	}
	return byNode
}

// requireCloudOnce waits until the cloud holds every event of every node,
// and checks it holds each (node, offset) once.
func (s *siteT) requireCloudOnce(t *testing.T, byNode map[string][]storedEvent, timeout time.Duration) {
	t.Helper()
	for node, evs := range byNode {
		offs := make([]uint64, len(evs))
		for i, e := range evs {
			offs[i] = e.Offset
		}
		cloudtest.RequireEventsOnce(t, s.cloud.URL(), node, offs, timeout)
		t.Logf("the cloud holds each of %s's %d events once", node, len(evs))
	}
}

// requireSiteWindows waits until the aggregator's final windows number as
// many as a brute-force recompute over every node's events, merged, and
// checks them equal, window by window.
func (s *siteT) requireSiteWindows(t *testing.T, byNode map[string][]storedEvent, timeout time.Duration) {
	t.Helper()
	var want map[string]*testutil.Recomputed
	for _, evs := range byNode {
		r := testutil.RecomputeWindows(t, evs, sizes, lateness)
		if want == nil {
			want = r
		} else {
			want = testutil.MergeRecomputed(want, r)
		}
	}
	var got []testutil.WindowJSON
	deadline := time.Now().Add(timeout)
	for {
		got = testutil.FinalWindows(t, "http://"+s.agg.http)
		if len(got) >= len(want) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the aggregator has %d final windows, the brute force %d", len(got), len(want))
		time.Sleep(200 * time.Millisecond)
	}
	testutil.RequireWindowsEqual(t, want, got)
	t.Logf("the aggregator's %d site-wide windows equal a brute-force recompute over all nodes' events", len(want))
}

// connectWatched connects an MQTT 5 client for each device at its owner
// and returns, per device, a channel that receives the server reference of
// a DISCONNECT 0x9C from the server ("" for any other disconnect).
func (s *siteT) connectWatched(t *testing.T, devices []string, owners map[string]string) map[string]chan string {
	t.Helper()
	out := map[string]chan string{}
	for _, d := range devices {
		var at *proc
		for _, n := range s.nodes {
			if n.name == owners[d] {
				at = n
			}
		}
		require.NotNil(t, at, "owner of %s", d)
		conn, err := net.DialTimeout("tcp", at.mqtt, 2*time.Second)
		require.NoError(t, err)
		ch := make(chan string, 1)
		cl := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(dis *paho.Disconnect) {
			ref := ""
			if dis.ReasonCode == 0x9C && dis.Properties != nil {
				ref = dis.Properties.ServerReference
			}
			ch <- ref
		}})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cl.Connect(ctx, &paho.Connect{ClientID: d + "-watch", Username: d, UsernameFlag: true, KeepAlive: 30, CleanStart: true})
		cancel()
		require.NoError(t, err, "connect %s at its owner %s", d, at.name)
		t.Cleanup(func() { cl.Disconnect(&paho.Disconnect{}) })
		out[d] = ch
	}
	return out
}

// cloudCount is how many events of node the cloud holds.
func (s *siteT) cloudCount(t *testing.T, node string) int {
	t.Helper()
	nc, err := nats.Connect(s.cloud.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	stored, err := cloud.StoredOffsets(context.Background(), js, node, cloud.StreamEvents, 0)
	require.NoError(t, err)
	return len(stored)
}
