package bench

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFlood plays bench flood over HTTP and MQTT against a real node with
// limits.device_rate: the normal devices have every event acknowledged,
// and the flooder is refused over HTTP (429) and MQTT 5 (PUBACK 0x97),
// never accepted more than its bucket allows, and slowed over MQTT (5: its
// refused connections read at about its rate; 3.1.1: no refusal, every
// message it sent stored), so that it sends far fewer than its schedule
// wanted.
func TestFlood(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	t.Setenv(helperEnv, "1")
	exe, err := os.Executable()
	require.NoError(t, err)
	const rate, rounds, phase = 100, 2, time.Second

	for _, c := range []struct {
		name, transport string
		version         int
	}{{"http", "http", 0}, {"mqtt-5", "mqtt", 5}, {"mqtt-3.1.1", "mqtt", 3}} {
		t.Run(c.name, func(t *testing.T) {
			version := c.version
			rep, err := RunFlood(t.Context(), FloodOptions{Binary: exe, Transport: c.transport, MQTTVersion: version,
				Devices: 20, DeviceRate: rate, EventRate: 10, Batch: 1, Phase: phase, Rounds: rounds})
			require.NoError(t, err)
			for _, p := range []FloodPhase{rep.Without, rep.With} {
				assert.Positive(t, p.Acked, "flood %v", p.Flood)
				assert.Zero(t, p.Failed, "flood %v: the normal devices are under their limit: %v", p.Flood, p.Failures)
			}
			w := rep.With
			assert.InDelta(t, rounds*phase.Seconds()*20*rate, w.FloodDue, 2*floodConns*rounds, "the flooder's schedule")
			// Each with-phase starts with a full bucket (burst = rate) and
			// refills at rate; a second of slack for the drain after it.
			maxAccepted := int64(rounds * (rate + rate*phase.Seconds() + rate))
			if c.transport == "http" {
				// A 429 comes at once: unlike an MQTT flooder, an HTTP one is
				// not slowed (on a loaded machine a slow answer may still
				// leave a few of its slots unsent).
				assert.Greater(t, w.FloodSent, w.FloodDue/2, "HTTP: the flooder is not slowed")
				assert.LessOrEqual(t, w.FloodSent, w.FloodDue)
				assert.Positive(t, w.Flood429, "HTTP: the flood is answered 429")
				assert.LessOrEqual(t, w.FloodAccepted, maxAccepted, "the flooder gets no more than its bucket")
				return
			}
			if version == 5 {
				assert.Positive(t, w.Flood429, "MQTT 5: the flood is answered 0x97")
				assert.Equal(t, w.FloodSent, w.FloodAccepted+w.Flood429, "every message sent is answered")
				assert.LessOrEqual(t, w.FloodAccepted, maxAccepted, "the flooder gets no more than its bucket")
				assert.Less(t, w.FloodSent, w.FloodDue/2, "a refused connection is read at about its rate: the flooder's window fills")
				return
			}
			assert.Zero(t, w.Flood429, "MQTT 3.1.1 has no negative ack")
			assert.Equal(t, w.FloodSent, w.FloodAccepted, "every held message is stored and acknowledged in the end")
			assert.Less(t, w.FloodSent, w.FloodDue/2, "the held acks slow the flooder down")
		})
	}
}
