package aggregator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/testutil"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
	"github.com/holdfast-edge/holdfast/internal/uplink"
	"github.com/holdfast-edge/holdfast/internal/window"
)

var fastRetry = uplink.RetryOptions{InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond, Multiplier: 2, MaxTries: 10}

func startCloud(t *testing.T) *cloud.Server {
	t.Helper()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv
}

func startAggregator(t *testing.T, dir, cloudURL string) *Aggregator {
	t.Helper()
	a, err := Start(Options{DataDir: dir, Listen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", CloudURL: cloudURL, retry: fastRetry})
	require.NoError(t, err)
	return a
}

func eventRec(off uint64, stream string, lane uplink.Lane) uplink.Record {
	e := event.Event{DeviceID: "d", Stream: stream, TS: int64(1_700_000_000_000 + off), Value: float64(off)}
	return uplink.Record{Offset: off, Type: event.TypeEvent, Stream: stream, Lane: lane, Payload: e.AppendBinary(nil)}
}

// origin is a fake edge node: a JetStream sink as a node's syncer drives it,
// with the positions it would save.
type origin struct {
	id    string
	sink  *uplink.JetStreamSink
	lanes map[uplink.Lane]uint64
	saved map[string]uint64
}

func newOrigin(t *testing.T, id, url string) *origin {
	o := &origin{id: id, lanes: map[uplink.Lane]uint64{}, saved: map[string]uint64{}}
	o.connect(t, url)
	return o
}

func (o *origin) connect(t *testing.T, url string) {
	t.Helper()
	if o.sink != nil {
		o.sink.Close()
	}
	o.sink = uplink.NewJetStreamSink(uplink.JetStreamOptions{URL: url, NodeID: o.id, Name: "aggregator"})
	require.NoError(t, o.sink.Resume(context.Background(), o.lanes, o.saved))
	t.Cleanup(func() { o.sink.Close() })
}

// send sends records [from, to) of one lane, in batches of 7.
func (o *origin) send(t *testing.T, from, to uint64, stream string, lane uplink.Lane) {
	t.Helper()
	for b := from; b < to; b += 7 {
		var recs []uplink.Record
		for off := b; off < min(b+7, to); off++ {
			recs = append(recs, eventRec(off, stream, lane))
		}
		require.NoError(t, o.sink.Send(context.Background(), recs))
		o.lanes[lane] = recs[len(recs)-1].Offset + 1
		o.saved = o.sink.Positions()
	}
}

// storedOnce waits until the cloud holds, for each node, exactly the
// offsets want gives, and fails at once if one is stored twice.
func storedOnce(t *testing.T, cloudURL string, stream string, want map[string][]uint64) {
	t.Helper()
	nc, err := nats.Connect(cloudURL)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var last string
	testutil.Eventually(t, "every record in the cloud once", func() bool {
		ok := true
		for node, offs := range want {
			stored, err := cloud.StoredOffsets(context.Background(), js, node, stream, 0)
			require.NoError(t, err)
			count := map[uint64]int{}
			for _, s := range stored {
				count[s.Offset]++
				require.Equal(t, 1, count[s.Offset], "node %s offset %d stored twice", node, s.Offset)
			}
			for _, off := range offs {
				if count[off] != 1 {
					ok = false
					last = fmt.Sprintf("%s: offset %d missing (%d stored)", node, off, len(stored))
				}
			}
			require.LessOrEqual(t, len(stored), len(offs), "node %s: more stored than sent", node)
		}
		if !ok {
			t.Log(last)
		}
		return ok
	})
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestForwardExactlyOnce: two nodes sync to the aggregator, which forwards
// to the cloud; the aggregator restarts mid-way, and once with a forwarding
// state older than what it forwarded (a crash between forwarding and
// saving). Every record is in the cloud once, under its node and offset.
func TestForwardExactlyOnce(t *testing.T) {
	cl := startCloud(t)
	dir := t.TempDir()
	a := startAggregator(t, dir, cl.URL())
	n1, n2 := newOrigin(t, "n1", a.NATSURL()), newOrigin(t, "n2", a.NATSURL())
	n1.send(t, 0, 100, "temp", uplink.LaneNormal)
	n2.send(t, 0, 60, "temp", uplink.LaneNormal)
	n2.send(t, 60, 80, "door", uplink.LaneCritical)
	storedOnce(t, cl.URL(), cloud.StreamEvents, map[string][]uint64{"n1": span(0, 100), "n2": span(0, 80)})

	// A restart on the same data.
	require.NoError(t, a.Close())
	old, err := os.ReadFile(filepath.Join(dir, "forward", cloud.StreamEvents+".json"))
	require.NoError(t, err)
	a = startAggregator(t, dir, cl.URL())
	n1.connect(t, a.NATSURL())
	n2.connect(t, a.NATSURL())
	n1.send(t, 100, 150, "temp", uplink.LaneNormal)
	n2.send(t, 80, 120, "temp", uplink.LaneNormal)
	storedOnce(t, cl.URL(), cloud.StreamEvents, map[string][]uint64{"n1": span(0, 150), "n2": span(0, 120)})

	// A crash after forwarding, before saving: the state goes back.
	require.NoError(t, a.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "forward", cloud.StreamEvents+".json"), old, 0o600))
	a = startAggregator(t, dir, cl.URL())
	defer a.Close()
	n1.connect(t, a.NATSURL())
	n1.send(t, 150, 160, "temp", uplink.LaneNormal)
	storedOnce(t, cl.URL(), cloud.StreamEvents, map[string][]uint64{"n1": span(0, 160), "n2": span(0, 120)})
	testutil.Eventually(t, "nothing left to forward", func() bool { return a.Status().Cloud.Lag[cloud.StreamEvents] == 0 })
}

// TestDirectAndThroughAggregator: a node that sent a range straight to the
// cloud (its aggregator was down) then sends it to the aggregator too; and
// one that sends direct what the aggregator already forwarded. The cloud
// holds each record once.
func TestDirectAndThroughAggregator(t *testing.T) {
	cl := startCloud(t)
	a := startAggregator(t, t.TempDir(), cl.URL())
	defer a.Close()
	ctx := context.Background()

	// Direct first: records 0-29 to the cloud, then 0-49 to the aggregator.
	direct := uplink.NewJetStreamSink(uplink.JetStreamOptions{URL: cl.URL(), NodeID: "n3"})
	defer direct.Close()
	require.NoError(t, direct.Resume(ctx, map[uplink.Lane]uint64{uplink.LaneNormal: 0}, nil))
	var recs []uplink.Record
	for off := range uint64(30) {
		recs = append(recs, eventRec(off, "temp", uplink.LaneNormal))
	}
	require.NoError(t, direct.Send(ctx, recs))
	n3 := newOrigin(t, "n3", a.NATSURL())
	n3.send(t, 0, 50, "temp", uplink.LaneNormal)
	storedOnce(t, cl.URL(), cloud.StreamEvents, map[string][]uint64{"n3": span(0, 50)})

	// Then the other way: the aggregator forwarded 50-69; the node's direct
	// sink, its cursor at 50 (what the direct path had confirmed), sends
	// 50-79 direct and then 70-79 to the aggregator.
	n3.send(t, 50, 70, "temp", uplink.LaneNormal)
	storedOnce(t, cl.URL(), cloud.StreamEvents, map[string][]uint64{"n3": span(0, 70)})
	saved := direct.Positions()
	require.NoError(t, direct.Resume(ctx, map[uplink.Lane]uint64{uplink.LaneNormal: 50}, saved))
	recs = nil
	for off := uint64(50); off < 80; off++ {
		recs = append(recs, eventRec(off, "temp", uplink.LaneNormal))
	}
	require.NoError(t, direct.Send(ctx, recs))
	n3.send(t, 70, 80, "temp", uplink.LaneNormal)
	n3.send(t, 80, 90, "temp", uplink.LaneNormal)
	storedOnce(t, cl.URL(), cloud.StreamEvents, map[string][]uint64{"n3": span(0, 90)})
	testutil.Eventually(t, "nothing left to forward", func() bool { return a.Status().Cloud.Lag[cloud.StreamEvents] == 0 })
}

// windowRec is a node's closed window of values, as its processor writes it.
func windowRec(t *testing.T, stream, device string, start int64, ts int64, values ...float64) (uplink.Record, *window.Partial) {
	k := window.Key{Stream: stream, DeviceID: device, Size: time.Minute, Start: start}
	p := window.NewPartial(k, window.DefaultAccuracy)
	for i, v := range values {
		p.Add(ts+int64(i), v)
	}
	sk, err := p.Sketch.MarshalBinary()
	require.NoError(t, err)
	res := p.Result()
	w := event.WindowRecord{Stream: stream, DeviceID: device, SizeMS: 60_000, Start: start, Count: p.Count, Sum: p.Sum,
		Min: p.Min, Max: p.Max, Last: p.Last, LastTS: p.LastTS, P50: res.P50, P95: res.P95, P99: res.P99, Sketch: sk}
	return uplink.Record{Type: event.TypeWindow, Stream: stream, Lane: uplink.LaneNormal, Payload: w.AppendBinary(nil)}, p
}

type windowsJSON struct {
	Windows []struct {
		Stream   string  `json:"stream"`
		DeviceID string  `json:"device_id"`
		Size     string  `json:"size"`
		Count    uint64  `json:"count"`
		Sum      float64 `json:"sum"`
		Min      float64 `json:"min"`
		Max      float64 `json:"max"`
		Last     float64 `json:"last"`
		Final    bool    `json:"final"`
		ID       string  `json:"id"`
	} `json:"windows"`
	Scope string `json:"scope"`
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(v))
	}
	return resp.StatusCode
}

// TestSiteWindowsMerge: a device's window split across two nodes (it moved)
// and the site-wide window both nodes have are answered as the merge of the
// nodes' results: count, sum, min, max exact; after a restart too.
func TestSiteWindowsMerge(t *testing.T) {
	dir := t.TempDir()
	a := startAggregator(t, dir, "")
	const start = 1_700_000_040_000 // a multiple of a minute
	n1, n2 := newOrigin(t, "n1", a.NATSURL()), newOrigin(t, "n2", a.NATSURL())
	r1, p1 := windowRec(t, "temp", "d1", start, start+10, 1, 5, -2)
	r2, p2 := windowRec(t, "temp", "d1", start, start+30_000, 7, 3)
	s1, ps1 := windowRec(t, "temp", "", start, start+10, 1, 5, -2, 4)
	s2, ps2 := windowRec(t, "temp", "", start, start+20, 7, 3, 9)
	only, _ := windowRec(t, "temp", "d2", start, start+5, 42)
	r1.Offset, s1.Offset, only.Offset = 10, 11, 12
	r2.Offset, s2.Offset = 20, 21
	require.NoError(t, n1.sink.Send(context.Background(), []uplink.Record{r1, s1, only}))
	require.NoError(t, n2.sink.Send(context.Background(), []uplink.Record{r2, s2}))

	check := func() {
		t.Helper()
		base := "http://" + a.HTTPAddr() + "/v1/windows"
		var got windowsJSON
		testutil.Eventually(t, "the merged window of d1", func() bool {
			require.Equal(t, http.StatusOK, getJSON(t, base+"?device_id=d1&size=1m", &got))
			return len(got.Windows) == 1 && got.Windows[0].Count == p1.Count+p2.Count
		})
		w := got.Windows[0]
		require.Equal(t, "site", got.Scope)
		require.Equal(t, p1.Sum+p2.Sum, w.Sum)
		require.Equal(t, math.Min(p1.Min, p2.Min), w.Min)
		require.Equal(t, math.Max(p1.Max, p2.Max), w.Max)
		require.Equal(t, 3.0, w.Last, "the value with the latest event time")
		require.True(t, w.Final)

		require.Equal(t, http.StatusOK, getJSON(t, base, &got))
		require.Len(t, got.Windows, 1, "site-wide windows only")
		require.Equal(t, ps1.Count+ps2.Count, got.Windows[0].Count)
		require.Equal(t, ps1.Sum+ps2.Sum, got.Windows[0].Sum)
		require.Equal(t, -2.0, got.Windows[0].Min)
		require.Equal(t, 9.0, got.Windows[0].Max)

		require.Equal(t, http.StatusOK, getJSON(t, base+"?device_id=*&stream=temp", &got))
		require.Len(t, got.Windows, 3)
		require.Equal(t, http.StatusOK, getJSON(t, base+"?device_id=d2", &got))
		require.Len(t, got.Windows, 1)
		require.Equal(t, uint64(1), got.Windows[0].Count)

		require.Equal(t, http.StatusBadRequest, getJSON(t, base+"?size=banana", nil))
		require.Equal(t, http.StatusBadRequest, getJSON(t, base+"?devce_id=d1", nil))
		require.Equal(t, http.StatusBadRequest, getJSON(t, base+"?limit=0", nil))
	}
	check()
	// Rebuilt from the stream at start.
	require.NoError(t, a.Close())
	a = startAggregator(t, dir, "")
	defer a.Close()
	check()
}

// TestStatus: a node's reports make it live in /v1/status; silent, it is
// lost. Without a cloud, forwarding is off.
func TestStatus(t *testing.T) {
	a, err := Start(Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", LostAfter: 500 * time.Millisecond})
	require.NoError(t, err)
	defer a.Close()
	r := StartReporter(ReporterOptions{URL: a.NATSURL(), NodeID: "n1", Every: 50 * time.Millisecond, Report: func() Report {
		return Report{NodeID: "n1", HTTP: "127.0.0.1:8080", LagRecords: 3, Load: Load{EventsPerS: 10, Buffer: 0.5},
			Sinks: []SinkState{{Sink: "aggregator", State: "connected"}}}
	}})
	var st Status
	testutil.Eventually(t, "n1 live", func() bool {
		require.Equal(t, http.StatusOK, getJSON(t, "http://"+a.HTTPAddr()+"/v1/status", &st))
		return len(st.Nodes) == 1 && st.Nodes[0].State == "live"
	})
	require.Equal(t, "aggregator", st.Role)
	require.Equal(t, "off", st.Cloud.State)
	require.Equal(t, uint64(3), st.Nodes[0].LagRecords)
	require.Equal(t, "127.0.0.1:8080", st.Nodes[0].HTTP)
	require.NoError(t, r.Close())
	testutil.Eventually(t, "n1 lost", func() bool {
		require.Equal(t, http.StatusOK, getJSON(t, "http://"+a.HTTPAddr()+"/v1/status", &st))
		return len(st.Nodes) == 1 && st.Nodes[0].State == "lost"
	})
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+a.HTTPAddr()+"/healthz", nil))
	resp, err := http.Get("http://" + a.HTTPAddr() + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Get("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestSecureByDefault: beyond loopback without a secret the aggregator does
// not start; with one, a client without the token cannot connect.
func TestSecureByDefault(t *testing.T) {
	_, err := Start(Options{DataDir: t.TempDir(), Listen: "0.0.0.0:0", HTTPAddr: "127.0.0.1:0"})
	require.True(t, errors.Is(err, ErrExposed), "%v", err)
	require.ErrorContains(t, err, "site.secret")
	require.ErrorContains(t, err, "--insecure")
	_, err = Start(Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPAddr: ":0"})
	require.True(t, errors.Is(err, ErrExposed), "%v", err)

	a, err := Start(Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Secret: "s3cret"})
	require.NoError(t, err)
	defer a.Close()
	_, err = nats.Connect(a.NATSURL(), nats.MaxReconnects(0))
	require.Error(t, err, "no token")
	nc, err := nats.Connect(a.NATSURL(), cloud.Access{Token: "s3cret"}.Options()...)
	require.NoError(t, err)
	nc.Close()
}

// TestTLSListener: with site.tls the aggregator's NATS listener is TLS; a
// node trusting its CA and holding the secret syncs, and the records are
// forwarded; a client trusting another CA is refused.
func TestTLSListener(t *testing.T) {
	cl := startCloud(t)
	ca, other := tlstest.NewCA(t, "site CA"), tlstest.NewCA(t, "other CA")
	dir := t.TempDir()
	cert, key := ca.Server(t, "aggregator").Write(t, dir, "aggregator")
	r, err := tlsconf.Load(cert, key, "")
	require.NoError(t, err)
	a, err := Start(Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", CloudURL: cl.URL(),
		Secret: "s3cret", TLS: r.ServerConfig(), retry: fastRetry})
	require.NoError(t, err)
	defer a.Close()
	access := cloud.Access{Token: "s3cret", CA: ca.WriteCA(t, dir, "ca.pem")}

	sink := uplink.NewJetStreamSink(uplink.JetStreamOptions{URL: a.NATSURL(), NodeID: "n1", Name: "aggregator", Access: access})
	defer sink.Close()
	require.NoError(t, sink.Resume(context.Background(), map[uplink.Lane]uint64{}, nil))
	require.NoError(t, sink.Send(context.Background(), []uplink.Record{eventRec(0, "temp", uplink.LaneNormal), eventRec(1, "temp", uplink.LaneNormal)}))
	storedOnce(t, cl.URL(), cloud.StreamEvents, map[string][]uint64{"n1": {0, 1}})

	_, err = nats.Connect(a.NATSURL(), append(cloud.Access{Token: "s3cret", CA: other.WriteCA(t, dir, "other.pem")}.Options(),
		nats.MaxReconnects(0))...)
	require.Error(t, err, "a certificate of another CA")
}
