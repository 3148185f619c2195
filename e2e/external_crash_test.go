package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// TestExternalCrashIDLessStoredOnce SIGKILLs a node in external mode while
// devices publish id-less events with their own ts to the site's Mosquitto
// at QoS 1. The broker redelivers what the node stored but had not
// acknowledged when it died; with ingest.dedup_without_id at its default
// (content) every event the broker acknowledged to a device is stored exactly
// once.
func TestExternalCrashIDLessStoredOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	t.Parallel()
	r := externalCrash(t, "content", 6)
	if r.stored != r.acked {
		t.Fatalf("%d events acknowledged, %d stored", r.acked, r.stored)
	}
	if r.dropped == 0 {
		t.Log("no redelivered event was dropped as a duplicate this run: the kills missed every unacknowledged write")
	}
}

// TestExternalCrashDedupOff is the same load with ingest.dedup_without_id:
// off: delivery is at least once, so every acknowledged event is stored and
// the broker's redeliveries may be stored twice. It logs how many were, the
// figure docs/BENCHMARKS.md compares with the default's zero.
func TestExternalCrashDedupOff(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	t.Parallel()
	r := externalCrash(t, "off", 6)
	if r.dropped != 0 {
		t.Fatalf("%d events dropped as duplicates with dedup_without_id off", r.dropped)
	}
}

// externalCrashResult counts one run of externalCrash.
type externalCrashResult struct {
	acked   int // events the broker acknowledged to their device
	stored  int // distinct events stored (each acknowledged one at least once)
	extra   int // copies stored beyond the first
	dropped int // redeliveries the node acknowledged as duplicates
}

// externalCrash runs 4 devices publishing to Mosquitto while a node
// subscribed to it in external mode is killed `kills` times, restarts the
// node once more, waits until it has drained the broker's queue, and checks
// that every acknowledged event is stored and that nothing was stored that
// was never sent. Each event is unique by (device, value), and its ts is the
// device's clock when it was sent.
func externalCrash(t *testing.T, dedupWithoutID string, kills int) externalCrashResult {
	broker := testutil.StartMosquitto(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
mqtt:
  mode: external
  external: {broker: "tcp://%s", client_id: holdfast-crash, topic: "devices/+/+"}
ingest:
  dedup_without_id: %s
windows:
  enabled: false
`, broker, dedupWithoutID))
	dataDir := filepath.Join(dir, "data")

	const devices = 4
	var mu sync.Mutex
	sent := map[string]bool{} // device/value
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	publish := func() {
		for d := range devices {
			device := fmt.Sprintf("ext-%d", d)
			c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + broker).
				SetClientID("device-" + device).SetCleanSession(true).SetAutoReconnect(false).
				SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second))
			if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("device %s cannot connect to the broker: %v", device, tok.Error())
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Disconnect(250)
				// Up to 8 publishes in flight, like a device draining its queue.
				var inflight []mqtt.Token
				var keys []string
				wait := func() {
					tok, key := inflight[0], keys[0]
					inflight, keys = inflight[1:], keys[1:]
					if tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
						mu.Lock()
						acked[key] = true
						mu.Unlock()
					}
				}
				for n := 0; ; n++ {
					select {
					case <-stop:
						for len(inflight) > 0 {
							wait()
						}
						return
					default:
					}
					key := device + "/" + strconv.Itoa(n)
					mu.Lock()
					sent[key] = true
					mu.Unlock()
					payload, _ := json.Marshal(map[string]any{"value": n, "ts": time.Now().UnixMilli()})
					inflight = append(inflight, c.Publish("devices/"+device+"/reading", 1, false, payload))
					keys = append(keys, key)
					if len(inflight) == 8 {
						wait()
					}
				}
			}()
		}
	}

	connected := func(p *proc) bool {
		var s struct {
			MQTT struct {
				Connected *bool `json:"connected"`
			} `json:"mqtt"`
		}
		return json.Unmarshal([]byte(get(t, p, "/v1/status")), &s) == nil && s.MQTT.Connected != nil && *s.MQTT.Connected
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 16))
	t.Logf("kill-time seed %d", seed)
	dropped := 0
	for round := range kills {
		p := start(t, dataDir, "--config", cfg)
		waitFor(t, "the node to connect to the broker", 20*time.Second, func() bool { return connected(p) })
		if round == 0 {
			// Only now does the broker hold the node's subscription: what
			// devices publish before it reaches no one.
			publish()
		}
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		dropped += duplicatesCounted(t, p)
		p.kill()
	}
	p := start(t, dataDir, "--config", cfg)
	waitFor(t, "the node to connect to the broker", 20*time.Second, func() bool { return connected(p) })
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	// The node has drained the broker's queue once every acknowledged event
	// is stored and nothing more arrives for a while.
	var stored []storedEvent
	last, still := -1, 0
	waitFor(t, "the node to store every acknowledged event", 120*time.Second, func() bool {
		stored = allEvents(t, p, "&stream=reading")
		if len(stored) == last {
			still++
		} else {
			last, still = len(stored), 0
		}
		if still == 20 {
			t.Logf("stuck at %d stored of %d acknowledged; metrics:\n%s", len(stored), len(acked), grepLines(get(t, p, "/metrics"), "holdfast_events_", "holdfast_mqtt"))
		}
		return len(stored) >= len(acked) && still >= 3
	})
	dropped += duplicatesCounted(t, p)
	p.stop(t)

	count := map[string]int{}
	for _, e := range stored {
		if e.ID != "" {
			t.Fatalf("stored event %s/%v has an id %q; none was sent", e.DeviceID, e.Value, e.ID)
		}
		key := e.DeviceID + "/" + strconv.FormatFloat(e.Value, 'f', -1, 64)
		if !sent[key] {
			t.Fatalf("stored event %s was never sent", key)
		}
		count[key]++
	}
	r := externalCrashResult{acked: len(acked), stored: len(count), dropped: dropped}
	for key, n := range count {
		r.extra += n - 1
		if n > 1 && dedupWithoutID != "off" {
			t.Errorf("event %s stored %d times", key, n)
		}
	}
	for key := range acked {
		if count[key] == 0 {
			t.Fatalf("acknowledged event %s is missing after %d kills", key, kills)
		}
	}
	t.Logf("dedup_without_id %s, %d kills: %d events sent, %d acknowledged by the broker, %d distinct events stored, %d of them more than once (%d extra rows), %d redeliveries dropped as duplicates",
		dedupWithoutID, kills, len(sent), len(acked), len(count), countOver1(count), r.extra, dropped)
	if len(acked) < 1000 {
		t.Fatalf("too little load got through to prove anything: %d acknowledged", len(acked))
	}
	return r
}

func countOver1(count map[string]int) int {
	n := 0
	for _, c := range count {
		if c > 1 {
			n++
		}
	}
	return n
}

// duplicatesCounted sums holdfast_events_duplicate_total over transports.
func duplicatesCounted(t *testing.T, p *proc) int {
	t.Helper()
	total := 0
	for _, line := range strings.Split(get(t, p, "/metrics"), "\n") {
		if !strings.HasPrefix(line, "holdfast_events_duplicate_total") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		total += int(v)
	}
	return total
}

// grepLines returns the lines of s that start with one of the prefixes.
func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
