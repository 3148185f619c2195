// Package ha drives HA pairs of the real holdfast binary: two nodes and a
// witness on 127.0.0.1, every member link through an in-process toxiproxy
// so that tests can cut and slow it, nodes killed with SIGKILL. It is its own
// package so that `go test ./...` runs it beside the other end-to-end tests.
package ha

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/testutil/cloudtest"
)

var binary string

func TestMain(m *testing.M) { os.Exit(testutil.MainWithHoldfast(m, "../../cmd/holdfast", &binary)) }

// nodeID is the pair's one node id.
const nodeID = "site-1"

// secret is the pair's member secret in these tests.
const secret = "pair-secret-of-the-tests"

// member is one process of a pair: a node or the witness.
type member struct {
	testutil.Proc
	name       string // "a", "b" or "w"
	dir        string
	http, mqtt string // fixed: the pair advertises them
	link       string // ha.listen
	peers      []string
	args       []string
	witness    bool
}

func (m *member) logs() string  { return m.Logs() }
func (m *member) running() bool { return m.Running() }
func (m *member) kill()         { m.Kill() }

// start runs the member's process; a node is waited for until its HTTP
// listener answers.
func (m *member) start(t *testing.T) {
	t.Helper()
	var args []string
	if m.witness {
		args = append([]string{"witness", "--ha-listen", m.link, "--ha-peers", strings.Join(m.peers, ","), "--data-dir", m.dir,
			"--advertise", noRoute}, m.args...)
	} else {
		args = append([]string{"run", "--data-dir", m.dir, "--node-id", nodeID, "--http-addr", m.http, "--mqtt-addr", m.mqtt,
			"--ha-listen", m.link, "--ha-peers", strings.Join(m.peers, ",")}, m.args...)
	}
	m.Binary, m.Args, m.Env = binary, args, []string{"HOLDFAST_HA_SECRET=" + secret}
	m.Start(t)
	if m.witness {
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if !m.running() {
			t.Fatalf("member %s exited:\n%s", m.name, m.logs())
		}
		resp, err := http.Get("http://" + m.http + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("member %s not answering after 60s:\n%s", m.name, m.logs())
}

// haStatus is the ha section of /v1/status and what the tests read beside it.
type haStatus struct {
	Role         string `json:"role"`
	Term         uint64 `json:"term"`
	Replication  string `json:"replication"`
	LagRecords   uint64 `json:"lag_records"`
	Member       string `json:"member"`
	Standby      string `json:"standby"`
	StandbyState string `json:"standby_state"`
	Links        []struct {
		Member    string `json:"member"`
		Connected bool   `json:"connected"`
	} `json:"links"`
	Primary *struct {
		NodeID string `json:"node_id"`
		HTTP   string `json:"http"`
		MQTT   string `json:"mqtt"`
		Member string `json:"member"`
	} `json:"primary"`
}

type nodeStatus struct {
	HA         *haStatus                    `json:"ha"`
	Losses     map[string]map[string]uint64 `json:"losses"`
	Processing struct {
		Replaying bool   `json:"replaying"`
		Lag       uint64 `json:"lag_records"`
	} `json:"processing"`
	Buffer struct {
		NextOffset uint64 `json:"next_offset"`
	} `json:"buffer"`
}

var quick = &http.Client{Timeout: 2 * time.Second}

func (m *member) status() (nodeStatus, error) {
	var s nodeStatus
	resp, err := quick.Get("http://" + m.http + "/v1/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return s, fmt.Errorf("status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, err
	}
	if s.HA == nil {
		return s, fmt.Errorf("no ha section")
	}
	return s, nil
}

// pair is two nodes, a witness, the proxies between them, a cloud and a
// webhook receiving the nodes' alerts.
type pair struct {
	a, b, w *member
	proxies map[string]*toxiproxy.Proxy // "a>b": a's link to b
	cloud   *cloud.Server
	dir     string
	alerts  *alertLog
}

// alertLog is a webhook receiver: the alerts the nodes sent, by rule and
// state.
type alertLog struct {
	mu  sync.Mutex
	got map[string]int // "rule state"
}

func newAlertLog(t *testing.T) (*alertLog, string) {
	l := &alertLog{got: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a struct{ Rule, State string }
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		l.mu.Lock()
		l.got[a.Rule+" "+a.State]++
		l.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return l, srv.URL
}

// waitAlert waits until an alert of rule in state has arrived.
func (l *alertLog) waitAlert(t *testing.T, rule, state string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		n := l.got[rule+" "+state]
		l.mu.Unlock()
		if n > 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "no %s alert %s within %v; got %v", rule, state, timeout, l.got)
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr is a fixed address for a member to listen on.
func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

// noRoute is where every member says it can be reached, and nothing
// listens: members then dial only the proxies they are given, never one
// another directly through what a third member tells them, so that cutting
// a proxy cuts the link.
const noRoute = "127.0.0.1:1"

// pairConfig is the nodes' config: small windows that close within the
// test, checkpoints every second, the cloud, the member link's advertised
// address; haExtra adds keys under ha:.
const pairConfig = `
windows:
  sizes: [1s, 5s]
  allowed_lateness: 500ms
  idle_timeout: 1h
checkpoints:
  interval: 1s
cloud:
  max_delay: 20ms
`

// newPair starts a witness and two nodes with haExtra's keys (indented) in
// their ha: section and args for `holdfast run`.
func newPair(t *testing.T, haExtra string, args ...string) *pair {
	t.Helper()
	return newPairWith(t, pairOptions{haExtra: haExtra, nodeArgs: args})
}

// pairOptions shape a pair: keys under the nodes' ha: section, arguments
// for `holdfast run` and for `holdfast witness`.
type pairOptions struct {
	haExtra     string
	nodeArgs    []string
	witnessArgs []string
}

func newPairWith(t *testing.T, o pairOptions) *pair {
	t.Helper()
	haExtra, args := o.haExtra, o.nodeArgs
	dir := t.TempDir()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	p := &pair{dir: dir, cloud: srv, proxies: map[string]*toxiproxy.Proxy{}}
	alerts, hook := newAlertLog(t)
	p.alerts = alerts
	mk := func(name string, witness bool) *member {
		return &member{name: name, dir: filepath.Join(dir, name), http: freeAddr(t), mqtt: freeAddr(t), link: freeAddr(t), witness: witness}
	}
	p.a, p.b, p.w = mk("a", false), mk("b", false), mk("w", true)
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	all := []*member{p.a, p.b, p.w}
	for _, from := range all {
		for _, to := range all {
			if from == to {
				continue
			}
			key := from.name + ">" + to.name
			px := toxiproxy.NewProxy(api, key, "127.0.0.1:0", to.link)
			require.NoError(t, px.Start())
			t.Cleanup(px.Stop)
			p.proxies[key] = px
			from.peers = append(from.peers, px.Listen)
		}
	}
	cfg := filepath.Join(dir, "holdfast.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(pairConfig+"  url: "+srv.URL()+"\n"+
		"alerts:\n  notify:\n    webhooks:\n      - url: "+hook+"\n"+
		"ha:\n  advertise: "+noRoute+"\n"+haExtra), 0o600))
	for _, m := range []*member{p.a, p.b} {
		m.args = append([]string{"--config", cfg}, args...)
	}
	p.w.args = o.witnessArgs
	p.w.start(t)
	p.a.start(t)
	p.b.start(t)
	return p
}

func (p *pair) nodes() []*member { return []*member{p.a, p.b} }

func (p *pair) other(m *member) *member {
	if m == p.a {
		return p.b
	}
	return p.a
}

func (p *pair) byHTTP(host string) *member {
	for _, m := range p.nodes() {
		if m.http == host {
			return m
		}
	}
	return nil
}

// primary waits until one node is primary and the other its eligible
// standby, and returns the primary and its term.
func (p *pair) paired(t *testing.T, timeout time.Duration) (*member, uint64) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, m := range p.nodes() {
			if !m.running() {
				continue
			}
			s, err := m.status()
			if err == nil && s.HA.Role == "primary" && s.HA.StandbyState == "paired" && s.HA.Standby != "" {
				o, err := p.other(m).status()
				if err == nil && o.HA.Role == "standby" && o.HA.Term == s.HA.Term && o.HA.Member == s.HA.Standby {
					return m, s.HA.Term
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, m := range []*member{p.a, p.b, p.w} {
		t.Logf("--- %s:\n%s", m.name, tail(m.logs(), 60))
	}
	t.Fatalf("no primary with an eligible standby after %v", timeout)
	return nil, 0
}

// primaryOf waits until some node is primary (whatever its standby).
func (p *pair) primaryOf(t *testing.T, timeout time.Duration) (*member, uint64) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, m := range p.nodes() {
			if s, err := m.status(); err == nil && m.running() && s.HA.Role == "primary" {
				return m, s.HA.Term
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, m := range []*member{p.a, p.b, p.w} {
		t.Logf("--- %s:\n%s", m.name, tail(m.logs(), 60))
	}
	t.Fatalf("no primary after %v", timeout)
	return nil, 0
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// settled waits until every member's links are up, then lets the link's
// replicated state catch up for a few seconds: a member that just came back
// must hold the pair's state before the pair can lose another.
func (p *pair) settled(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		up := 0
		for _, m := range p.nodes() {
			if s, err := m.status(); err == nil && len(s.HA.Links) == 2 && s.HA.Links[0].Connected && s.HA.Links[1].Connected {
				up++
			}
		}
		if up == 2 {
			break
		}
		require.True(t, time.Now().Before(deadline), "the members' links did not all come up")
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
}

// cut stops the proxies of the named links ("a>b"), so the link is down both
// ways when both directions are named; heal starts them again.
func (p *pair) cut(links ...string) {
	for _, l := range links {
		p.proxies[l].Stop()
	}
}

func (p *pair) heal(t *testing.T, links ...string) {
	t.Helper()
	for _, l := range links {
		if err := p.proxies[l].Start(); err != nil && !strings.Contains(err.Error(), "already") {
			require.NoError(t, err)
		}
	}
}

// isolate lists both directions of every link of m.
func isolate(m *member, others ...*member) []string {
	var out []string
	for _, o := range others {
		out = append(out, m.name+">"+o.name, o.name+">"+m.name)
	}
	return out
}

// ackLog records every acknowledgement: which node gave it, in which term,
// and when the client had it.
type ackLog struct {
	mu    sync.Mutex
	sent  map[string]bool
	acked map[string]ackRec
}

type ackRec struct {
	node string
	term uint64
	at   time.Time
}

func newAckLog() *ackLog { return &ackLog{sent: map[string]bool{}, acked: map[string]ackRec{}} }

func (l *ackLog) send(id string) {
	l.mu.Lock()
	l.sent[id] = true
	l.mu.Unlock()
}

func (l *ackLog) ack(id string, r ackRec) {
	l.mu.Lock()
	if _, ok := l.acked[id]; !ok {
		l.acked[id] = r
	}
	l.mu.Unlock()
}

func (l *ackLog) snapshot() map[string]ackRec {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]ackRec, len(l.acked))
	for k, v := range l.acked {
		out[k] = v
	}
	return out
}

// firstAckAfter is the earliest acknowledgement in a term above term, zero
// if none yet.
func (l *ackLog) firstAckAfter(term uint64) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, r := range l.acked {
		if r.term > term && (first.IsZero() || r.at.Before(first)) {
			first = r.at
		}
	}
	return first
}

// eventJSON is one event a load generator sends. Values are whole numbers,
// so that a window's sum is exact in any order of addition: the engine adds
// a closed 1s window into its 5s window, the recompute event by event.
func eventJSON(id, device string, seq int) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"device_id":%q,"stream":"temp","ts":%d,"value":%d}`, id, device, time.Now().UnixMilli(), seq%100))
}

// post sends body to m without following redirects and says what came back.
func post(client *http.Client, m *member, body []byte) (status int, term uint64, loc string, err error) {
	resp, err := client.Post("http://"+m.http+"/v1/events", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	term, _ = strconv.ParseUint(resp.Header.Get("Holdfast-Term"), 10, 64)
	return resp.StatusCode, term, resp.Header.Get("Location"), nil
}

var noRedirect = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// httpDevice sends events one at a time, each until acknowledged, to
// whichever node takes it: on a 307 it follows Location itself (recording
// which node acknowledged), on an error or a 503 it tries the other node.
func httpDevice(p *pair, led *ackLog, name string, stop chan struct{}) {
	target := p.a
	for seq := 0; ; seq++ {
		id := fmt.Sprintf("%s-%d", name, seq)
		body := eventJSON(id, name, seq)
		led.send(id)
		for {
			select {
			case <-stop:
				return
			default:
			}
			status, term, loc, err := post(noRedirect, target, body)
			switch {
			case err == nil && status == 200:
				led.ack(id, ackRec{node: target.name, term: term, at: time.Now()})
			case err == nil && status == http.StatusTemporaryRedirect:
				if m := p.byHTTP(strings.TrimSuffix(strings.TrimPrefix(loc, "http://"), "/v1/events")); m != nil {
					target = m
				}
				continue
			default:
				target = p.other(target)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// storedEvent is one element of GET /v1/events.
type storedEvent = testutil.RawEvent

func getJSON(t *testing.T, u string, into any) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, u)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(into))
}

func allEvents(t *testing.T, m *member) []storedEvent {
	t.Helper()
	var out []storedEvent
	cursor := ""
	for {
		u := "http://" + m.http + "/v1/events?limit=10000"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		var page struct {
			Events []storedEvent `json:"events"`
			Next   string        `json:"next"`
		}
		getJSON(t, u, &page)
		out = append(out, page.Events...)
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
}

func finalWindows(t *testing.T, m *member) []testutil.WindowJSON {
	t.Helper()
	return testutil.FinalWindows(t, "http://"+m.http)
}

// requireExactlyOnce checks that every acknowledged event is stored once and
// nothing is stored that was never sent; it returns the stored events by id.
func requireExactlyOnce(t *testing.T, led *ackLog, events []storedEvent) map[string]storedEvent {
	t.Helper()
	byID := map[string]storedEvent{}
	for _, e := range events {
		_, dup := byID[e.ID]
		require.False(t, dup, "event %s stored twice (offsets %d and %d)", e.ID, byID[e.ID].Offset, e.Offset)
		byID[e.ID] = e
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	for id := range led.acked {
		_, ok := byID[id]
		require.True(t, ok, "acknowledged event %s (by %s, term %d) is missing", id, led.acked[id].node, led.acked[id].term)
	}
	for id := range byID {
		require.True(t, led.sent[id], "stored event %s was never sent", id)
	}
	return byID
}

// requireCloudOnce waits until the cloud holds every event the primary
// holds, and checks it holds each once.
func requireCloudOnce(t *testing.T, p *pair, events []storedEvent) {
	t.Helper()
	cloudtest.RequireEventsOnce(t, p.cloud.URL(), nodeID, offsets(events), 90*time.Second)
}

func offsets(events []storedEvent) []uint64 {
	out := make([]uint64, len(events))
	for i, e := range events {
		out[i] = e.Offset
	}
	return out
}

// requireWindowsRecompute waits for processing to catch up on m and checks
// its closed windows against a brute-force recompute over its events.
func requireWindowsRecompute(t *testing.T, m *member, events []storedEvent) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := m.status()
		if err == nil && !s.Processing.Replaying && s.Processing.Lag == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline), "processing did not catch up")
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	got := finalWindows(t, m)
	want := testutil.RecomputeWindows(t, events, []time.Duration{time.Second, 5 * time.Second}, 500*time.Millisecond)
	testutil.RequireWindowsEqual(t, want, got)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
