package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ledger records what the load generators sent and what the node acknowledged.
type ledger struct {
	mu    sync.Mutex
	sent  map[string]sentEvent // by event id
	acked map[string]bool
}

type sentEvent struct {
	device string
	value  float64
}

func (l *ledger) send(id, device string, value float64) {
	l.mu.Lock()
	l.sent[id] = sentEvent{device, value}
	l.mu.Unlock()
}

func (l *ledger) ack(ids ...string) {
	l.mu.Lock()
	for _, id := range ids {
		l.acked[id] = true
	}
	l.mu.Unlock()
}

// TestCrashUnderLoad SIGKILLs the node at random moments while HTTP and MQTT
// clients write to it, restarts it, and checks at the end that every
// acknowledged event is stored exactly once and nothing is stored that was
// never sent.
func TestCrashUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	t.Parallel()
	crashUnderLoad(t, 22)
}

// TestCrashUnderLoadOtherEngines is TestCrashUnderLoad for the SQLite and
// Pebble buffer engines, with fewer kills: the engines' own contract suite
// (internal/buffer/enginetest) kills them 8 times each as well.
func TestCrashUnderLoadOtherEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	t.Parallel()
	for _, engine := range []string{"sqlite", "pebble"} {
		t.Run(engine, func(t *testing.T) { crashUnderLoad(t, 8, "--buffer-engine", engine) })
	}
}

func crashUnderLoad(t *testing.T, rounds int, args ...string) {
	dataDir := t.TempDir()
	led := &ledger{sent: map[string]sentEvent{}, acked: map[string]bool{}}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 7)) // picks the kill moments
	t.Logf("kill-time seed %d", seed)

	for round := range rounds {
		p := start(t, dataDir, args...)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Add(1)
			go func() { defer wg.Done(); httpLoad(p, led, round, w, stop) }()
		}
		for d := range 4 {
			wg.Add(1)
			go func() { defer wg.Done(); mqttLoad(p, led, round, d, stop) }()
		}
		time.Sleep(time.Duration(100+rng.IntN(500)) * time.Millisecond)
		p.kill()
		close(stop)
		wg.Wait()
	}

	p := start(t, dataDir, args...)
	stored := allEvents(t, p, "")
	p.stop(t)

	count := map[string]int{}
	for _, e := range stored {
		count[e.ID]++
		s, ok := led.sent[e.ID]
		if !ok {
			t.Fatalf("stored event %q was never sent", e.ID)
		}
		if s.device != e.DeviceID || s.value != e.Value {
			t.Fatalf("stored event %q is %s=%v, sent %s=%v", e.ID, e.DeviceID, e.Value, s.device, s.value)
		}
	}
	for id, n := range count {
		if n != 1 {
			t.Fatalf("event %q stored %d times", id, n)
		}
	}
	for id := range led.acked {
		if count[id] != 1 {
			t.Fatalf("acknowledged event %q is missing after %d crashes", id, rounds)
		}
	}
	var httpAcked, mqttAcked int
	for id := range led.acked {
		if id[0] == 'h' {
			httpAcked++
		} else {
			mqttAcked++
		}
	}
	t.Logf("%d crashes: %d events sent, %d acknowledged (%d HTTP, %d MQTT), %d stored",
		rounds, len(led.sent), len(led.acked), httpAcked, mqttAcked, len(stored))
	if httpAcked < rounds || mqttAcked < rounds {
		t.Fatalf("too little load got through to prove anything: %d HTTP, %d MQTT acks", httpAcked, mqttAcked)
	}
}

// loadEvent is one event a load generator posts.
type loadEvent struct {
	id, device, stream string
	value              float64
}

// httpLoad posts batches of 50 "crash" events from 7 devices until the node
// dies or stop is closed. A batch counts as acknowledged once the node answered
// 200 with every event accepted.
func httpLoad(p *proc, led *ledger, round, worker int, stop chan struct{}) {
	httpLoadWith(p, led, stop, func(n, i int) loadEvent {
		return loadEvent{fmt.Sprintf("h-%d-%d-%d-%d", round, worker, n, i), fmt.Sprintf("http-%d", i%7), "crash", float64(n*100 + i)}
	})
}

// httpLoadWith posts batches of 50 events, event i of batch n made by gen,
// until the node dies or stop is closed.
func httpLoadWith(p *proc, led *ledger, stop chan struct{}, gen func(n, i int) loadEvent) {
	client := &http.Client{Timeout: 10 * time.Second}
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		var body bytes.Buffer
		ids := make([]string, 50)
		for i := range ids {
			e := gen(n, i)
			ids[i] = e.id
			led.send(e.id, e.device, e.value)
			line, _ := json.Marshal(map[string]any{"device_id": e.device, "stream": e.stream, "value": e.value, "id": e.id})
			body.Write(append(line, '\n'))
		}
		resp, err := client.Post(p.url("/v1/events"), "application/x-ndjson", &body)
		if err != nil {
			return // the node is gone
		}
		var r struct {
			Accepted int `json:"accepted"`
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if err == nil && resp.StatusCode == 200 && r.Accepted == len(ids) {
			led.ack(ids...)
		}
	}
}

// mqttLoad publishes QoS 1 events from one device connection until the node
// dies or stop is closed. An event counts as acknowledged once its PUBACK came.
func mqttLoad(p *proc, led *ledger, round, dev int, stop chan struct{}) {
	device := fmt.Sprintf("mqtt-%d", dev)
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + p.mqttAddr).
		SetClientID(fmt.Sprintf("crash-%d-%d", round, dev)).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return
	}
	defer c.Disconnect(0)
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		id := fmt.Sprintf("m-%d-%d-%d", round, dev, n)
		value := float64(n)
		led.send(id, device, value)
		payload, _ := json.Marshal(map[string]any{"value": value, "id": id})
		tok := c.Publish("devices/"+device+"/crash", 1, false, payload)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil || !c.IsConnectionOpen() {
			return
		}
		led.ack(id)
	}
}
