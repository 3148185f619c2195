package ha

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// directDevice writes to one node only, never following a redirect, and
// records each acknowledgement with the node and the term it came in: the
// raw material for "at no instant do two nodes both acknowledge".
func directDevice(m *member, led *ackLog, name string, stop chan struct{}) {
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		default:
		}
		id := fmt.Sprintf("%s-%d", name, seq)
		led.send(id)
		status, term, _, err := post(noRedirect, m, eventJSON(id, name, seq))
		if err == nil && status == 200 {
			led.ack(id, ackRec{node: m.name, term: term, at: time.Now()})
		} else {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(3 * time.Millisecond)
	}
}

// requireNoOverlap checks that acknowledgements of different terms never
// interleave in time: every ack of a lower term came before every ack of a
// higher one, and no term has two nodes acknowledging.
func requireNoOverlap(t *testing.T, acks map[string]ackRec) {
	t.Helper()
	type span struct {
		node        string
		first, last time.Time
		n           int
	}
	spans := map[uint64]*span{}
	for _, r := range acks {
		if r.node == "mqtt" {
			continue
		}
		require.NotZero(t, r.term, "an acknowledgement without a term")
		s := spans[r.term]
		if s == nil {
			spans[r.term] = &span{node: r.node, first: r.at, last: r.at, n: 1}
			continue
		}
		require.Equal(t, s.node, r.node, "term %d acknowledged by two nodes", r.term)
		if r.at.Before(s.first) {
			s.first = r.at
		}
		if r.at.After(s.last) {
			s.last = r.at
		}
		s.n++
	}
	terms := make([]uint64, 0, len(spans))
	for term := range spans {
		terms = append(terms, term)
	}
	sort.Slice(terms, func(i, j int) bool { return terms[i] < terms[j] })
	for i := 1; i < len(terms); i++ {
		lo, hi := spans[terms[i-1]], spans[terms[i]]
		require.True(t, lo.last.Before(hi.first), "term %d (%s) acknowledged until %v, after term %d (%s) began at %v",
			terms[i-1], lo.node, lo.last.Format(time.StampMilli), terms[i], hi.node, hi.first.Format(time.StampMilli))
	}
	for _, term := range terms {
		s := spans[term]
		t.Logf("term %d: %s acknowledged %d writes from %v to %v", term, s.node, s.n, s.first.Format(time.StampMilli), s.last.Format(time.StampMilli))
	}
}

// TestHAPartitions cuts the member links in the ways a site network fails —
// the primary from its standby only, the witness down, the primary from
// everyone, a link flapping every 500 ms — while devices write to both nodes
// directly. At no moment may two nodes acknowledge, and every acknowledged
// event ends up on the primary exactly once.
func TestHAPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("HA partition test skipped in -short mode")
	}
	p := newPair(t, "")
	prim, term := p.paired(t, 90*time.Second)
	led := newAckLog()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, m := range p.nodes() {
		for i := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); directDevice(m, led, fmt.Sprintf("%s%d", m.name, i), stop) }()
		}
	}
	ackedBy := func(node string, since time.Time) int {
		n := 0
		for _, r := range led.snapshot() {
			if r.node == node && r.at.After(since) {
				n++
			}
		}
		return n
	}
	neverPrimary := func(m *member, d time.Duration) {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			if s, err := m.status(); err == nil {
				require.NotEqual(t, "primary", s.HA.Role, "%s became primary", m.name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	t.Run("standby cut off", func(t *testing.T) {
		sb := p.other(prim)
		links := isolate(prim, sb)
		p.cut(links...)
		cutAt := time.Now()
		// The primary goes on alone after ha.sync_timeout; the standby, not
		// eligible any more, never takes over.
		neverPrimary(sb, 15*time.Second)
		require.Greater(t, ackedBy(prim.name, cutAt.Add(6*time.Second)), 0, "the primary stopped acknowledging without its standby")
		s, err := prim.status()
		require.NoError(t, err)
		require.Equal(t, "alone", s.HA.StandbyState)
		require.Equal(t, "", s.HA.Standby)
		p.alerts.waitAlert(t, "ha-standby-lost", "firing", 10*time.Second)
		p.heal(t, links...)
		prim, term = p.paired(t, 60*time.Second)
		p.alerts.waitAlert(t, "ha-standby-lost", "resolved", 10*time.Second)
	})

	t.Run("witness down", func(t *testing.T) {
		p.w.kill()
		downAt := time.Now()
		neverPrimary(p.other(prim), 12*time.Second)
		require.Greater(t, ackedBy(prim.name, downAt.Add(2*time.Second)), 0, "the primary stopped acknowledging without the witness")
		p.w.start(t)
		prim, term = p.paired(t, 60*time.Second)
		p.settled(t)
	})

	t.Run("primary isolated", func(t *testing.T) {
		old, oldTerm := prim, term
		links := isolate(old, p.other(old), p.w)
		p.cut(links...)
		newPrim, newTerm := p.primaryOf(t, 60*time.Second)
		for newPrim == old {
			time.Sleep(100 * time.Millisecond)
			newPrim, newTerm = p.primaryOf(t, 60*time.Second)
		}
		require.Greater(t, newTerm, oldTerm)
		p.heal(t, links...)
		// The old primary sees the newer term, steps down and follows.
		prim, term = p.paired(t, 90*time.Second)
		require.Equal(t, newPrim, prim)
		s, err := old.status()
		require.NoError(t, err)
		require.Equal(t, "standby", s.HA.Role)
	})

	t.Run("flapping link", func(t *testing.T) {
		links := isolate(prim, p.other(prim), p.w)
		for i := 0; i < 20; i++ {
			p.cut(links...)
			time.Sleep(500 * time.Millisecond)
			p.heal(t, links...)
			time.Sleep(500 * time.Millisecond)
		}
		prim, term = p.paired(t, 90*time.Second)
	})

	close(stop)
	wg.Wait()
	requireNoOverlap(t, led.snapshot())
	requireExactlyOnce(t, led, allEvents(t, prim))
	t.Logf("final primary %s in term %d", prim.name, term)
}

// TestHARedirects checks how a standby sends devices to the primary: HTTP
// 307 with the primary's URL, MQTT 5 CONNACK 0x9C with the primary's address
// as server reference, MQTT 3.1.1 refused.
func TestHARedirects(t *testing.T) {
	if testing.Short() {
		t.Skip("HA test skipped in -short mode")
	}
	p := newPair(t, "")
	prim, _ := p.paired(t, 90*time.Second)
	sb := p.other(prim)

	status, _, loc, err := post(noRedirect, sb, eventJSON("r-1", "r", 1))
	require.NoError(t, err)
	require.Equal(t, http.StatusTemporaryRedirect, status)
	require.Equal(t, "http://"+prim.http+"/v1/events", loc)
	// A client that follows redirects lands on the primary.
	resp, err := http.Post("http://"+sb.http+"/v1/events", "application/json", bytes.NewReader(eventJSON("r-2", "r", 2)))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, prim.http, resp.Request.URL.Host)

	// MQTT 5: CONNACK 0x9C naming the primary.
	conn, err := net.Dial("tcp", sb.mqtt)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "redirected-5", KeepAlive: 30, CleanStart: true})
	require.Error(t, err)
	require.NotNil(t, ca, "no CONNACK: %v", err)
	require.EqualValues(t, 0x9C, ca.ReasonCode)
	require.NotNil(t, ca.Properties)
	require.Equal(t, prim.mqtt, ca.Properties.ServerReference)

	// MQTT 3.1.1: refused, so the client tries its next server.
	only := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + sb.mqtt).SetClientID("redirected-3").SetConnectTimeout(3 * time.Second))
	tok := only.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.Error(t, tok.Error())
	both := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + sb.mqtt).AddBroker("tcp://" + prim.mqtt).
		SetClientID("redirected-3b").SetConnectTimeout(3 * time.Second))
	tok = both.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	pub := both.Publish("devices/r/temp", 1, false, eventJSON("r-3", "r", 3))
	require.True(t, pub.WaitTimeout(5*time.Second))
	require.NoError(t, pub.Error())
	both.Disconnect(0)

	// holdfast status shows the pair.
	out, err := exec.Command(binary, "status", "--addr", sb.http).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "HA          standby")
	require.Contains(t, string(out), "primary   ")
	require.Contains(t, string(out), "http://"+prim.http)

	// A planned switchover: the primary steps down, the standby takes over
	// at once, the old primary follows it.
	resp, err = http.Post("http://"+prim.http+"/v1/ha/step-down", "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	asked := time.Now()
	newPrim, _ := p.paired(t, 60*time.Second)
	require.Equal(t, sb, newPrim, "the standby did not take over on step-down")
	t.Logf("planned switchover: paired again with the roles swapped %v after the step-down", time.Since(asked).Round(time.Millisecond))
	prim = newPrim

	ids := map[string]bool{}
	for _, e := range allEvents(t, prim) {
		ids[e.ID] = true
	}
	require.False(t, ids["r-1"], "the standby's 307 stored the event")
	require.True(t, ids["r-2"])
	require.True(t, ids["r-3"])
}
