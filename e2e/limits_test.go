package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// hotspotJSON is one element of /v1/status "hotspots".
type hotspotJSON struct {
	Type   string  `json:"type"`
	Stream string  `json:"stream"`
	Key    string  `json:"key"`
	Share  float64 `json:"share"`
	Ratio  float64 `json:"ratio"`
}

func hotspots(t *testing.T, p *proc) []hotspotJSON {
	t.Helper()
	var st struct {
		Hotspots []hotspotJSON `json:"hotspots"`
	}
	body := get(t, p, "/v1/status")
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.NotNil(t, st.Hotspots, "hotspots must be [] rather than null: %s", body)
	return st.Hotspots
}

func hasHotspot(hs []hotspotJSON, typ, key string) bool {
	for _, h := range hs {
		if h.Type == typ && h.Key == key {
			return true
		}
	}
	return false
}

// postBatch posts n events of device and returns the status, Retry-After
// and the decoded answer.
func postBatch(t *testing.T, p *proc, device string, seq *int, n int) (int, string, ingestResponse, string) {
	t.Helper()
	var b bytes.Buffer
	for range n {
		*seq++
		fmt.Fprintf(&b, `{"id":"%s-%d","device_id":%q,"stream":"temp","value":%d}`+"\n", device, *seq, device, *seq)
	}
	resp, err := http.Post(p.url("/v1/events"), "application/x-ndjson", &b)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r ingestResponse
	require.NoError(t, json.Unmarshal(body, &r), string(body))
	return resp.StatusCode, resp.Header.Get("Retry-After"), r, string(body)
}

// TestDeviceRateLimits drives limits.device_rate through the real binary:
// an HTTP device flooding gets 429 with Retry-After (and, in a batch that
// still had tokens, the events over its limit rejected by index); an MQTT 5
// device flooding gets PUBACK 0x97 with a reason string, is read at about
// its rate after a refusal, and exactly the events acknowledged are stored;
// an MQTT 3.1.1 device over its limit is slowed to about its rate, every
// event acknowledged and stored; devices at their rate are never refused;
// /v1/status lists the flooders as device_burst and key_skew hot spots, and
// /metrics counts the limited events by transport and the hot spots by type.
func TestDeviceRateLimits(t *testing.T) {
	const rate = 50 // events/s per device, burst 50
	dir := t.TempDir()
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, "limits:\n  device_rate: 50\n  device_burst: 50\n")
	p := start(t, filepath.Join(dir, "data"), "--config", cfg)
	defer p.stop(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg, normal sync.WaitGroup

	// Ten devices at 20 events/s each, batches of 5: under their limit.
	var normalMu sync.Mutex
	normalBad := []string{}
	normalSent := 0
	for i := range 10 {
		normal.Go(func() {
			dev, seq := fmt.Sprintf("calm-%d", i), 0
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				code, _, r, body := postBatch(t, p, dev, &seq, 5)
				normalMu.Lock()
				normalSent += 5
				if code != 200 || r.Accepted != 5 {
					normalBad = append(normalBad, body)
				}
				normalMu.Unlock()
			}
		})
	}

	// An MQTT 3.1.1 device sending as fast as its acks come, one in flight:
	// slowed to its rate, nothing lost.
	const slowN = 150
	var slowAfterBurst time.Duration
	wg.Go(func() {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + p.mqttAddr).SetClientID("slow-3").SetProtocolVersion(4))
		tok := c.Connect()
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Errorf("connect 3.1.1: %v", tok.Error())
			return
		}
		defer c.Disconnect(100)
		var burstDone time.Time
		for i := range slowN {
			if i == rate {
				burstDone = time.Now()
			}
			tok := c.Publish("devices/slow-3/temp", 1, false, fmt.Sprintf(`{"value":%d,"id":"slow-%d"}`, i, i))
			if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
				t.Errorf("3.1.1 publish %d not acknowledged: %v", i, tok.Error())
				return
			}
		}
		slowAfterBurst = time.Since(burstDone)
	})

	// An MQTT 5 device publishing QoS 1 flat out for 2 s, and on until its
	// first refusal (a loaded machine may take longer to go past its
	// burst), at most 15 s.
	acked5, refused5 := 0, 0
	var reason5 string
	var took5 time.Duration
	wg.Go(func() {
		conn, err := net.Dial("tcp", p.mqttAddr)
		if err != nil {
			t.Error(err)
			return
		}
		c5 := paho5.NewClient(paho5.ClientConfig{Conn: conn})
		if _, err := c5.Connect(ctx, &paho5.Connect{ClientID: "flood-5", KeepAlive: 30, CleanStart: true}); err != nil {
			t.Error(err)
			return
		}
		defer c5.Disconnect(&paho5.Disconnect{})
		began := time.Now()
		defer func() { took5 = time.Since(began) }()
		for i := 0; time.Since(began) < 2*time.Second || refused5 == 0 && time.Since(began) < 15*time.Second; i++ {
			pr, err := c5.Publish(ctx, &paho5.Publish{Topic: "devices/flood-5/temp", QoS: 1,
				Payload: fmt.Appendf(nil, `{"value":%d,"id":"f5-%d"}`, i, i)})
			switch {
			case pr == nil:
				t.Errorf("MQTT 5 publish %d: %v", i, err)
				return
			case pr.ReasonCode == 0:
				acked5++
			case pr.ReasonCode == 0x97:
				refused5++
				if pr.Properties != nil {
					reason5 = pr.Properties.ReasonString
				}
			default:
				t.Errorf("MQTT 5 publish %d: reason %#x", i, pr.ReasonCode)
				return
			}
		}
	})

	// The HTTP flood: batches of 100 back to back for 2 s, from one device.
	seq, accepted, codes, retryAfter := 0, 0, map[int]int{}, ""
	var body429 string
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) {
		code, ra, r, body := postBatch(t, p, "flood-http", &seq, 100)
		codes[code]++
		accepted += r.Accepted
		require.Equal(t, 100, r.Accepted+len(r.Rejected), body)
		if code == http.StatusTooManyRequests {
			retryAfter, body429 = ra, body
		}
	}
	for c := range codes {
		require.Contains(t, []int{200, 429}, c, "HTTP flood answers: %v", codes)
	}
	require.Positive(t, codes[429], "no 429 for the flood: %v", codes)
	n, err := strconv.Atoi(retryAfter)
	require.NoError(t, err, "Retry-After %q", retryAfter)
	require.GreaterOrEqual(t, n, 1)
	require.Contains(t, body429, `device \"flood-http\" over its rate limit of 50 events/s (burst 50)`)
	// Two seconds at 50/s on top of a burst of 50, give or take a second.
	require.InDelta(t, 150, accepted, 60, "flood events accepted")

	wg.Wait() // the MQTT devices are done
	require.Positive(t, refused5, "MQTT 5 flood never refused")
	require.Contains(t, reason5, "rate limit")
	// Its burst and its rate over the time it sent, give or take a second.
	require.InDelta(t, rate+rate*took5.Seconds(), acked5, 60, "MQTT 5 flood events acknowledged in %v", took5)
	// Flat out with one in flight, it would send thousands in 2 s; after a
	// refusal its connection is read again only once it has a token.
	require.LessOrEqual(t, float64(acked5+refused5), 5*rate*took5.Seconds(), "the refused MQTT 5 device was not slowed")
	t.Logf("HTTP flood %v, %d accepted; MQTT 5 flood %d acked, %d refused in %v (%q); MQTT 3.1.1 %d events after the burst in %v",
		codes, accepted, acked5, refused5, took5, reason5, slowN-rate, slowAfterBurst)
	slowRate := float64(slowN-rate) / slowAfterBurst.Seconds()
	require.Less(t, slowRate, 2.0*rate, "the 3.1.1 device was not slowed")

	// The HTTP flooder goes on at its limit, 10 events every 200 ms, until
	// its share of the stream's window shows as key skew (the detector
	// needs about 800 events in a window before it calls a stream skewed).
	waitFor(t, "flood-http as a key_skew hot spot", 30*time.Second, func() bool {
		_, _, r, _ := postBatch(t, p, "flood-http", &seq, 10)
		accepted += r.Accepted
		time.Sleep(200 * time.Millisecond)
		return hasHotspot(hotspots(t, p), "key_skew", "flood-http")
	})
	close(stop)
	normal.Wait()
	normalMu.Lock()
	require.Empty(t, normalBad, "a device under its limit was refused")
	require.Positive(t, normalSent)
	normalMu.Unlock()

	// Stored: exactly what was acknowledged.
	require.Len(t, allEvents(t, p, "&device_id=flood-http"), accepted)
	require.Len(t, allEvents(t, p, "&device_id=flood-5"), acked5)
	require.Len(t, allEvents(t, p, "&device_id=slow-3"), slowN)

	hs := hotspots(t, p)
	for _, dev := range []string{"flood-http", "flood-5", "slow-3"} {
		require.True(t, hasHotspot(hs, "device_burst", dev), "%s not a device_burst: %+v", dev, hs)
	}
	require.True(t, hasHotspot(hs, "key_skew", "flood-http"), "flood-http not a key_skew: %+v", hs)
	for _, h := range hs {
		require.False(t, h.Type == "device_burst" && strings.HasPrefix(h.Key, "calm-"), "%+v", h)
	}
	metrics := get(t, p, "/metrics")
	for _, want := range []string{
		`holdfast_rate_limited_events_total{transport="http"}`,
		`holdfast_rate_limited_events_total{transport="mqtt"}`,
		`holdfast_hotspots{type="device_burst"} 3`,
		`holdfast_events_rejected_total{reason="rate_limited",transport="http"}`,
	} {
		require.Contains(t, metrics, want)
	}
	require.NotContains(t, get(t, p, "/v1/status"), `"rate_limited"`, "rate-limited events are not losses")
}
