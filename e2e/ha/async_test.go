package ha

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHAAsyncUnreplicatedTail runs an async pair whose replication link is
// slowed, writes a burst the primary acknowledges at once, and kills the
// primary before its standby has it. The standby takes over without the
// burst's tail; when the old primary returns it steps down, moves its log to
// quarantine, and the new primary accounts for the lost events in the loss
// ledger (unreplicated). Nothing is stored twice, on the node or in the cloud.
func TestHAAsyncUnreplicatedTail(t *testing.T) {
	if testing.Short() {
		t.Skip("HA test skipped in -short mode")
	}
	p := newPair(t, "", "--ha-replication", "async")
	prim, term := p.paired(t, 90*time.Second)
	sb := p.other(prim)
	led := newAckLog()

	// Slow the link between the two nodes (not the witness's): the standby
	// falls behind but stays in contact, so it may still take over.
	p.slow(t, prim, sb)
	const burst = 300
	for i := range burst {
		id := fmt.Sprintf("burst-%d", i)
		led.send(id)
		status, _, _, err := post(noRedirect, prim, eventJSON(id, "burst", i))
		require.NoError(t, err)
		require.Equal(t, 200, status)
		led.ack(id, ackRec{node: prim.name, term: term, at: time.Now()})
	}
	prim.kill()
	p.unslow(t, prim, sb)
	newPrim, newTerm := p.primaryOf(t, 60*time.Second)
	require.Equal(t, sb, newPrim)
	require.Greater(t, newTerm, term)
	for i := range 50 {
		id := fmt.Sprintf("after-%d", i)
		led.send(id)
		status, _, _, err := post(noRedirect, newPrim, eventJSON(id, "after", i))
		require.NoError(t, err)
		require.Equal(t, 200, status)
		led.ack(id, ackRec{node: newPrim.name, term: newTerm, at: time.Now()})
	}

	// The old primary returns as standby: its tail goes to quarantine.
	prim.start(t)
	p.paired(t, 90*time.Second)
	q, err := filepath.Glob(filepath.Join(prim.dir, "ha", "quarantine", "*"))
	require.NoError(t, err)
	require.Len(t, q, 1, "one quarantined log:\n%s", tail(prim.logs(), 40))

	events := allEvents(t, newPrim)
	stored := map[string]int{}
	for _, e := range events {
		stored[e.ID]++
	}
	lost := 0
	for id := range led.snapshot() {
		require.LessOrEqual(t, stored[id], 1, "event %s stored twice", id)
		if stored[id] == 0 {
			require.True(t, strings.HasPrefix(id, "burst-"), "event %s, acknowledged by the new primary, is missing", id)
			lost++
		}
	}
	require.Greater(t, lost, 0, "the standby had the whole burst: the test did not make the primary ahead")
	// The new primary's ledger accounts for exactly the events the old
	// primary held beyond the new history: the acknowledged ones it lost.
	var ledgerCount uint64
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		s, err := newPrim.status()
		require.NoError(t, err)
		if ledgerCount = s.Losses["unreplicated"]["temp"]; ledgerCount > 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.EqualValues(t, lost, ledgerCount, "ledger unreplicated count vs acknowledged events missing on the new primary")
	_, err = os.Stat(filepath.Join(prim.dir, "ha", "report"))
	require.True(t, os.IsNotExist(err), "the quarantine report was not taken by the primary")
	requireCloudOnce(t, p, events)
	t.Logf("burst of %d acknowledged in async mode; %d never reached the standby: quarantined and in the ledger", burst, lost)
}

// slow puts 1.2 s of latency on the link between two nodes, both ways;
// unslow takes it off.
func (p *pair) slow(t *testing.T, a, b *member) {
	t.Helper()
	for _, l := range []string{a.name + ">" + b.name, b.name + ">" + a.name} {
		_, err := p.proxies[l].Toxics.AddToxicJson(strings.NewReader(`{"name":"slow","type":"latency","stream":"downstream","attributes":{"latency":1200}}`))
		require.NoError(t, err)
	}
}

func (p *pair) unslow(t *testing.T, a, b *member) {
	t.Helper()
	for _, l := range []string{a.name + ">" + b.name, b.name + ">" + a.name} {
		require.NoError(t, p.proxies[l].Toxics.RemoveToxic(t.Context(), "slow"))
	}
}

// TestHAAsyncLagIsBounded: with ha.max_lag 20 an async primary whose
// standby falls behind holds each ack until the standby is no more than 20
// records behind it, so a kill loses at most that many acknowledged events,
// and ha-replication-lag fires while the bound holds acks up.
func TestHAAsyncLagIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("HA test skipped in -short mode")
	}
	const maxLag = 20
	p := newPair(t, fmt.Sprintf("  max_lag: %d\n", maxLag), "--ha-replication", "async")
	prim, term := p.paired(t, 90*time.Second)
	sb := p.other(prim)
	led := newAckLog()
	p.slow(t, prim, sb)
	for i := range 60 {
		id := fmt.Sprintf("bounded-%d", i)
		led.send(id)
		status, _, _, err := post(noRedirect, prim, eventJSON(id, "bounded", i))
		require.NoError(t, err)
		require.Equal(t, 200, status)
		led.ack(id, ackRec{node: prim.name, term: term, at: time.Now()})
	}
	p.alerts.waitAlert(t, "ha-replication-lag", "firing", 10*time.Second)
	prim.kill()
	p.unslow(t, prim, sb)
	newPrim, _ := p.primaryOf(t, 60*time.Second)
	require.Equal(t, sb, newPrim)

	stored := map[string]bool{}
	for _, e := range allEvents(t, newPrim) {
		stored[e.ID] = true
	}
	lost := 0
	for id := range led.snapshot() {
		if !stored[id] {
			lost++
		}
	}
	// The last ack was given with the standby at most maxLag records
	// behind: events, and the derived records between them, are among them.
	require.LessOrEqual(t, lost, maxLag, "acknowledged events lost beyond ha.max_lag")
	t.Logf("60 acknowledged in async mode over a slow link with max_lag %d: %d lost in the takeover", maxLag, lost)
}
