package ha

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// mqttDevice publishes QoS 1 events, each until its PUBACK, through a
// client configured with both nodes (MQTT 3.1.1: a standby refuses it, so
// it moves on to the other server).
func mqttDevice(p *pair, led *ackLog, name string, stop chan struct{}) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + p.a.mqtt).AddBroker("tcp://" + p.b.mqtt).
		SetClientID(name).SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond).
		SetConnectTimeout(2 * time.Second).SetWriteTimeout(2 * time.Second).SetOrderMatters(false)
	c := mqtt.NewClient(opts)
	c.Connect()
	defer c.Disconnect(0)
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
			if !c.IsConnectionOpen() {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			tok := c.Publish("devices/"+name+"/temp", 1, false, body)
			if tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
				led.ack(id, ackRec{node: "mqtt", at: time.Now()})
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHAFailoverUnderLoad kills the primary of a sync pair with SIGKILL ten
// times while HTTP and MQTT devices write, each time restarting it as the
// standby and waiting until it may take over again, so the role alternates.
// Every acknowledged event must be on the last primary exactly once, in the
// cloud exactly once, and its windows equal to a recompute. The time from
// each kill to the first acknowledgement in the new term is measured.
func TestHAFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("HA failover test skipped in -short mode")
	}
	const rounds = 10
	dir := t.TempDir()
	promoted := filepath.Join(dir, "promoted")
	p := newPair(t, "  promote_command: echo \"$HOLDFAST_HA_TERM $HOLDFAST_HA_MEMBER\" >> "+promoted+"\n")
	_, term := p.paired(t, 90*time.Second)
	startTerm := term

	led := newAckLog()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); httpDevice(p, led, fmt.Sprintf("h%d", i), stop) }()
	}
	for i := range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); mqttDevice(p, led, fmt.Sprintf("m%d", i), stop) }()
	}
	var failovers []time.Duration
	for round := range rounds {
		prim, term := p.paired(t, 90*time.Second)
		time.Sleep(1500 * time.Millisecond)
		killed := time.Now()
		prim.kill()
		var first time.Time
		deadline := time.Now().Add(60 * time.Second)
		for first.IsZero() {
			require.True(t, time.Now().Before(deadline), "round %d: no acknowledgement in a term after %d within 60s", round, term)
			time.Sleep(20 * time.Millisecond)
			first = led.firstAckAfter(term)
		}
		failovers = append(failovers, first.Sub(killed))
		t.Logf("round %d: killed %s (primary in term %d); first ack in the new term %v later", round, prim.name, term, first.Sub(killed).Round(time.Millisecond))
		prim.start(t)
	}
	p.paired(t, 90*time.Second)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	prim, _ := p.paired(t, 90*time.Second)
	events := allEvents(t, prim)
	byID := requireExactlyOnce(t, led, events)
	requireCloudOnce(t, p, events)
	requireWindowsRecompute(t, prim, events)

	var max time.Duration
	for _, d := range failovers {
		max = maxDur(max, d)
	}
	t.Logf("%d kills: failover (kill → first acknowledged write in the new term) median %v, max %v; %d events acknowledged, %d stored",
		rounds, median(failovers).Round(time.Millisecond), max.Round(time.Millisecond), len(led.snapshot()), len(byID))

	p.alerts.waitAlert(t, "ha-takeover", "firing", 10*time.Second)

	// The promotion hook ran once per takeover, with the new term.
	b, err := os.ReadFile(promoted)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.GreaterOrEqual(t, len(lines), rounds, "promote_command runs:\n%s", b)
	require.Contains(t, string(b), fmt.Sprintf("%d ", startTerm+rounds))
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}
