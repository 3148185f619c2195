package site

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// TestSiteScaleOut runs three nodes, an aggregator and a cloud, with 1 000
// simulated devices (one in four over MQTT 5, the rest over HTTP), each
// starting at a random node and sent to its owner by 307 or CONNACK 0x9C.
// It checks, in turn:
//   - the nodes agree on every device's owner;
//   - a fourth node joining moves at most 1/4 + 5 % of the devices;
//   - a node killed with SIGKILL leaves the membership within the failure
//     detection time (with slack for a loaded machine), and its devices go
//     to the others;
//   - once it is back, every acknowledged event is in exactly one node's
//     buffer and in the cloud exactly once, and the aggregator's site-wide
//     windows equal a brute-force recompute over all nodes' events.
func TestSiteScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("site test skipped in -short mode")
	}
	s := newSite(t, siteOptions{aggregator: true})
	// n2, the node killed below, syncs every 5 s: it dies holding records
	// it has not synced.
	slow := filepath.Join(s.dir, "slow-sync.yaml")
	require.NoError(t, os.WriteFile(slow, []byte(strings.Replace(nodeConfig, "max_delay: 20ms", "max_delay: 5s\n  batch_records: 1000000", 1)), 0o600))
	s.addNode(t)
	s.addNode(t, "--config", slow)
	s.addNode(t)
	s.converged(t, 30*time.Second)

	devs := s.devices(1000, 4)
	names := make([]string, len(devs))
	for i, d := range devs {
		names[i] = d.name
	}
	// Every node names the same owner for every device.
	before := s.nodes[0].owners(t, names)
	perNode := map[string]int{}
	for _, o := range before {
		perNode[o]++
	}
	for _, n := range s.nodes[1:] {
		require.Equal(t, before, n.owners(t, names), "%s disagrees with %s on owners", n.name, s.nodes[0].name)
	}
	t.Logf("3 nodes agree on the owners of %d devices: %v", len(names), perNode)

	l := newLedger()
	s.play(t, l, devs, 0, 3, 64)
	sent, acked, redirects := l.counts()
	require.Equal(t, sent, acked)
	require.Positive(t, redirects, "no device was ever redirected: every one started at its owner?")
	t.Logf("phase 1: %d events acknowledged, %d redirects", acked, redirects)

	// MQTT 5 devices stay connected to their owners across the join.
	watched := s.connectWatched(t, names[:120], before)

	// A fourth node joins: about a quarter of the devices move to it.
	n4 := s.addNode(t)
	s.converged(t, 30*time.Second)
	after := s.nodes[0].owners(t, names)
	require.Equal(t, after, n4.owners(t, names), "the new node disagrees on owners")
	moved := 0
	for d, o := range after {
		if o != before[d] {
			moved++
		}
	}
	share := float64(moved) / float64(len(names))
	t.Logf("join: %d of %d devices moved (%.1f %%; bound 1/4 + 5 %% = 30 %%)", moved, len(names), 100*share)
	require.LessOrEqual(t, share, 0.25+0.05)
	require.Positive(t, moved)
	// Those whose owner changed were sent there: DISCONNECT 0x9C naming the
	// new owner; the others stay.
	sentOn := 0
	for d, w := range watched {
		if after[d] == before[d] {
			continue
		}
		sentOn++
		select {
		case ref := <-w:
			require.Equal(t, n4.mqtt, ref, "device %s sent to %s, its owner is %s", d, ref, after[d])
		case <-time.After(10 * time.Second):
			t.Fatalf("MQTT 5 device %s (moved from %s to %s) was not disconnected with a server reference", d, before[d], after[d])
		}
	}
	for d, w := range watched {
		if after[d] == before[d] {
			select {
			case ref := <-w:
				t.Fatalf("device %s did not move but was sent to %s", d, ref)
			default:
			}
		}
	}
	require.Positive(t, sentOn, "none of the watched devices moved")
	t.Logf("join: %d connected MQTT 5 devices whose owner changed were sent to it with DISCONNECT 0x9C; %d stayed", sentOn, len(watched)-sentOn)
	// A node dies while the devices write: its devices go to the others
	// within the failure detection, and the devices carry on there.
	victim := s.nodes[1]
	mine := 0
	for _, o := range after {
		if o == victim.name {
			mine++
		}
	}
	byVictim := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		k := 0
		for _, by := range l.acked {
			if by == victim.name {
				k++
			}
		}
		return k
	}
	before2 := byVictim()
	killedc := make(chan time.Time, 1)
	go func() {
		for byVictim() < before2+200 {
			time.Sleep(time.Millisecond)
		}
		victim.kill()
		killedc <- time.Now()
	}()
	s.playBackground(l, devs, 3, 3, 64)
	killed := <-killedc
	inCloud := s.cloudCount(t, victim.name)
	acked2 := byVictim()
	t.Logf("kill -9 of %s under load: it had acknowledged %d events, the cloud holds %d of them", victim.name, acked2, inCloud)
	require.Less(t, inCloud, acked2, "the killed node had synced everything: the test would not show its unsynced records arriving")
	survivor := s.nodes[0]
	for {
		ids, err := survivor.alive()
		if err == nil && !strings.Contains(","+strings.Join(ids, ",")+",", ","+victim.name+",") {
			break
		}
		require.Less(t, time.Since(killed), 5*failureDetection+10*time.Second, "%s still in the membership", victim.name)
		time.Sleep(50 * time.Millisecond)
	}
	detected := time.Since(killed)
	t.Logf("kill -9 of %s (%d devices): out of the membership after %v (site.failure_detection %v)", victim.name, mine, detected.Round(10*time.Millisecond), failureDetection)
	s.converged(t, 30*time.Second)
	left := survivor.owners(t, names)
	others := 0
	for d, o := range left {
		require.NotEqual(t, victim.name, o, "device %s still assigned to the dead node", d)
		if after[d] != victim.name && after[d] != o {
			others++
		}
	}
	t.Logf("leave: %d devices of the dead node reassigned; %d of the live nodes' moved too", mine, others)
	s.waitPlay(t)
	s.play(t, l, devs, 6, 2, 64)

	// It returns: its unsynced records reach the cloud.
	victim.start(t)
	s.converged(t, 30*time.Second)
	s.play(t, l, devs, 8, 1, 64)
	s.closeWindows(t)
	s.caughtUp(t, 90*time.Second)
	byNode := s.requireAcked(t, l, []string{victim.name}, 64)
	sent, acked, redirects = l.counts()
	require.Equal(t, sent, acked)
	t.Logf("%d events acknowledged (%d redirects), each in exactly one node's buffer", acked, redirects)
	s.requireCloudOnce(t, byNode, 90*time.Second)
	s.requireSiteWindows(t, byNode, 60*time.Second)
}

// TestSiteAggregatorDown kills the aggregator with SIGKILL while devices
// write: the nodes sync straight to the cloud, and once it is back the
// cloud holds each record once and the aggregator's site-wide windows are
// complete.
func TestSiteAggregatorDown(t *testing.T) {
	if testing.Short() {
		t.Skip("site test skipped in -short mode")
	}
	s := newSite(t, siteOptions{aggregator: true})
	for range 2 {
		s.addNode(t)
	}
	s.converged(t, 30*time.Second)
	devs := s.devices(200, 4)
	l := newLedger()
	s.play(t, l, devs, 0, 2, 32)

	// Killed while the devices write.
	_, ackedBefore, _ := l.counts()
	go func() {
		for {
			if _, acked, _ := l.counts(); acked >= ackedBefore+300 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		s.agg.kill()
	}()
	s.play(t, l, devs, 2, 5, 32)
	require.False(t, s.agg.running())
	// The nodes reach the cloud without the aggregator: their direct sink
	// drains while the aggregator's is offline.
	s.caughtUpDirect(t, 60*time.Second)

	s.agg.start(t)
	s.play(t, l, devs, 5, 2, 32)
	s.closeWindows(t)
	s.caughtUp(t, 90*time.Second)
	byNode := s.requireAcked(t, l, nil, 0)
	s.requireCloudOnce(t, byNode, 90*time.Second)
	s.requireSiteWindows(t, byNode, 60*time.Second)

	// The aggregator's status lists every node, live, with its lag and load.
	var st struct {
		Role  string `json:"role"`
		Nodes []struct {
			NodeID     string `json:"node_id"`
			State      string `json:"state"`
			LagRecords uint64 `json:"lag_records"`
			Load       *struct {
				EventsPerS float64 `json:"events_per_s"`
			} `json:"load"`
		} `json:"nodes"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.agg.getJSON(t, s.agg.base()+"/v1/status", &st)
		live := 0
		for _, n := range st.Nodes {
			if n.State == "live" && n.Load != nil {
				live++
			}
		}
		if live == len(s.nodes) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the aggregator's status: %+v", st)
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, "aggregator", st.Role)
}

// caughtUpDirect waits until every live node's "cloud" sink has nothing
// left to send while its "aggregator" sink is not connected.
func (s *siteT) caughtUpDirect(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, n := range s.live() {
		for {
			st, err := n.status()
			var direct, agg string
			var lag uint64 = 1
			for _, sk := range st.Sinks {
				switch sk.Sink {
				case "cloud":
					direct, lag = sk.State, sk.LagRecords
				case "aggregator":
					agg = sk.State
				}
			}
			if err == nil && lag == 0 && agg != "connected" {
				t.Logf("%s: aggregator sink %s, cloud sink %s and drained", n.name, agg, direct)
				break
			}
			require.True(t, time.Now().Before(deadline), "%s: the cloud sink did not drain without the aggregator: %+v %v", n.name, st.Sinks, err)
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestSiteGeographic runs two nodes in zone a and one in zone b with
// geographic assignment: zone-a devices go to zone-a nodes while one
// lives, and anywhere once none does; a zone-a device posting at the
// zone-b node is redirected to a zone-a node.
func TestSiteGeographic(t *testing.T) {
	if testing.Short() {
		t.Skip("site test skipped in -short mode")
	}
	s := newSite(t, siteOptions{extra: []string{"--assign", "geographic"}})
	a1 := s.addNode(t, "--zone", "a")
	a2 := s.addNode(t, "--zone", "a")
	b1 := s.addNode(t, "--zone", "b")
	s.converged(t, 30*time.Second)

	for i := range 200 {
		dev := fmt.Sprintf("geo%03d", i)
		for _, n := range s.nodes {
			o, err := n.owner(dev, "a")
			require.NoError(t, err)
			require.Contains(t, []string{a1.name, a2.name}, o, "%s (zone a) assigned to %s by %s", dev, o, n.name)
			o, err = n.owner(dev, "b")
			require.NoError(t, err)
			require.Equal(t, b1.name, o, "%s (zone b) assigned by %s", dev, n.name)
		}
	}
	// A zone-a device at the zone-b node is sent to a zone-a node.
	resp, err := noRedirect.Post("http://"+b1.http+"/v1/events?zone=a", "application/json",
		strings.NewReader(`{"device_id":"geo-x","stream":"temp","ts":1700000000000,"value":1}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
	loc := resp.Header.Get("Location")
	require.True(t, strings.HasPrefix(loc, "http://"+a1.http+"/") || strings.HasPrefix(loc, "http://"+a2.http+"/"), "Location %s", loc)

	// A request claiming to be forwarded by a member without the site's
	// signature is refused.
	resp, err = noRedirect.Post("http://"+b1.http+"/v1/events?forwarded=n1", "application/json",
		strings.NewReader(`{"device_id":"geo-y","stream":"temp","ts":1700000000000,"value":1}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	// An MQTT 3.1.1 device at a node that does not own it is served there,
	// and its events are stored by the owner alone.
	var dev, owner string
	for i := 0; owner == "" || owner == b1.name; i++ {
		dev = fmt.Sprintf("mqtt3-%d", i)
		owner, err = b1.owner(dev, "")
		require.NoError(t, err)
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + b1.mqtt).SetClientID(dev).SetConnectTimeout(3 * time.Second))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	for i := range 5 {
		pub := c.Publish("devices/"+dev+"/temp", 1, false, event(fmt.Sprintf("%s-%d", dev, i), dev, i))
		require.True(t, pub.WaitTimeout(10*time.Second))
		require.NoError(t, pub.Error())
	}
	c.Disconnect(100)
	count := func(p *proc) int { return len(p.eventsOf(t, dev)) }
	for _, n := range s.nodes {
		want := 0
		if n.name == owner {
			want = 5
		}
		require.Equal(t, want, count(n), "events of MQTT 3.1.1 device %s (owner %s) on %s", dev, owner, n.name)
	}

	// No zone-a node left: zone-a devices go anywhere (to b1).
	a1.kill()
	a2.kill()
	s.converged(t, 30*time.Second)
	for i := range 50 {
		o, err := b1.owner(fmt.Sprintf("geo%03d", i), "a")
		require.NoError(t, err)
		require.Equal(t, b1.name, o)
	}
}
