package uplink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// wireLine is one line of the sinks' wire format, as a receiver reads it.
type wireLine struct {
	NodeID string          `json:"node_id"`
	Offset uint64          `json:"offset"`
	Type   string          `json:"type"`
	Stream string          `json:"stream"`
	Record json.RawMessage `json:"record"`
}

// expected is what a receiver should see for one record of the log.
type expected struct {
	typ, stream string
	record      map[string]any
}

// fillLog appends events of two streams, some with id and tags, and a
// window, an alert and a watermark record every 97 events, and returns what
// each offset should arrive as.
func fillLog(t *testing.T, l *buffer.Log, events int, streams ...string) map[uint64]expected {
	t.Helper()
	want := map[uint64]expected{}
	var ps [][]byte
	var exp []expected
	flush := func() {
		first, err := l.Append(ps...)
		require.NoError(t, err)
		for i, e := range exp {
			want[first+uint64(i)] = e
		}
		ps, exp = ps[:0], exp[:0]
	}
	for i := range events {
		e := event.Event{
			DeviceID: fmt.Sprint("dev-", i%7), Stream: streams[i%len(streams)],
			TS: 1_700_000_000_000 + int64(i), Value: float64(i) + 0.25, Received: 1_700_000_001_000 + int64(i),
		}
		rec := map[string]any{
			"device_id": e.DeviceID, "stream": e.Stream, "ts": jsonMillis(e.TS), "value": e.Value,
			"received_at": jsonMillis(e.Received),
		}
		if i%3 == 0 {
			e.ID = fmt.Sprint("id-", i)
			e.Tags = map[string]string{"site": "north", "unit": "°C \"q\""}
			rec["id"] = e.ID
			rec["tags"] = map[string]any{"site": "north", "unit": "°C \"q\""}
		}
		ps = append(ps, e.AppendBinary(nil))
		exp = append(exp, expected{"event", e.Stream, rec})
		if i%97 == 50 {
			w := event.WindowRecord{
				Stream: e.Stream, DeviceID: e.DeviceID, SizeMS: 60_000, Start: 1_700_000_040_000, Count: 4,
				Sum: 10, Min: 1, Max: 4, Last: 3, LastTS: 1_700_000_050_000, P50: 2.5, P95: 3.9, P99: 4,
			}
			ps = append(ps, w.AppendBinary(nil))
			exp = append(exp, expected{"window", e.Stream, map[string]any{
				"stream": e.Stream, "device_id": e.DeviceID, "size": "1m0s",
				"start": "2023-11-14T22:14:00.000Z", "end": "2023-11-14T22:15:00.000Z", "count": 4.0,
				"sum": 10.0, "min": 1.0, "max": 4.0, "mean": 2.5, "last": 3.0, "p50": 2.5, "p95": 3.9, "p99": 4.0,
				"id": e.Stream + "/" + e.DeviceID + "/60000/1700000040000",
			}})
			a := event.AlertRecord{
				Rule: "too-hot", Severity: "critical", Firing: false, Stream: e.Stream, DeviceID: e.DeviceID,
				Value: 99.5, Threshold: 90, FiredAt: 1_700_000_000_000, ResolvedAt: 1_700_000_060_000,
			}
			ps = append(ps, a.AppendBinary(nil))
			exp = append(exp, expected{"alert", e.Stream, map[string]any{
				"id": "too-hot/" + e.DeviceID + "/1700000000000", "rule": "too-hot", "severity": "critical",
				"state": "resolved", "stream": e.Stream, "device_id": e.DeviceID, "value": 99.5, "threshold": 90.0,
				"fired_at": "2023-11-14T22:13:20.000Z", "resolved_at": "2023-11-14T22:14:20.000Z",
			}})
			wm := event.WatermarkRecord{Stream: e.Stream, Watermark: 1_700_000_000_123}
			ps = append(ps, wm.AppendBinary(nil))
			exp = append(exp, expected{"watermark", e.Stream, map[string]any{
				"stream": e.Stream, "watermark": "2023-11-14T22:13:20.123Z",
			}})
		}
		if len(ps) >= 100 {
			flush()
		}
	}
	if len(ps) > 0 {
		flush()
	}
	return want
}

// checkLines checks that got holds exactly the records of want, each with
// the right envelope and record object.
func checkLines(t *testing.T, node string, want map[uint64]expected, got map[uint64]wireLine) {
	t.Helper()
	require.Len(t, got, len(want))
	for off, w := range want {
		g, ok := got[off]
		require.True(t, ok, "offset %d never arrived", off)
		require.Equal(t, node, g.NodeID, "offset %d", off)
		require.Equal(t, off, g.Offset)
		require.Equal(t, w.typ, g.Type, "offset %d", off)
		require.Equal(t, w.stream, g.Stream, "offset %d", off)
		var rec map[string]any
		require.NoError(t, json.Unmarshal(g.Record, &rec), "offset %d: %s", off, g.Record)
		require.Equal(t, w.record, rec, "offset %d", off)
	}
}

// ndjsonReceiver is an HTTP endpoint of the sink's wire format that answers
// the first requests with failures and then accepts, keeping every line.
type ndjsonReceiver struct {
	t *testing.T

	mu       sync.Mutex
	requests int
	failures []func(w http.ResponseWriter) // answers of the first requests, in order
	lines    map[uint64]wireLine           // by offset, after dedup
	received int                           // lines, duplicates included
	keys     []string
	dec      *zstd.Decoder
}

func (rc *ndjsonReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	if rc.requests <= len(rc.failures) {
		rc.failures[rc.requests-1](w)
		return
	}
	t := rc.t
	body, err := io.ReadAll(r.Body)
	if !assert.NoError(t, err) {
		return
	}
	assert.Equal(t, "application/x-ndjson", r.Header.Get("Content-Type"))
	if r.Header.Get("Content-Encoding") == "zstd" {
		body, err = rc.dec.DecodeAll(body, nil)
		if !assert.NoError(t, err) {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	var first, last uint64
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		var l wireLine
		if err := json.Unmarshal(sc.Bytes(), &l); !assert.NoError(t, err, "%s", sc.Bytes()) {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if n == 0 {
			first = l.Offset
		}
		last = l.Offset
		n++
		rc.received++
		rc.lines[l.Offset] = l // dedup by node_id+offset: one node here
	}
	assert.True(t, n > 0 && bytes.HasSuffix(body, []byte("\n")), "body is not NDJSON")
	key := r.Header.Get("Idempotency-Key")
	assert.Equal(t, fmt.Sprintf("%s:%d-%d", "edge-1", first, last), key)
	rc.keys = append(rc.keys, key)
	w.WriteHeader(http.StatusNoContent)
}

func answer503(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	http.Error(w, "busy", http.StatusServiceUnavailable)
}

func hangUp(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// TestHTTPSinkThroughFailures syncs a log through a real Syncer to an HTTP
// receiver that answers 503 with Retry-After twice and hangs up once before it
// accepts: every record arrives, and after dedup by node_id+offset the
// receiver holds exactly the log's records.
func TestHTTPSinkThroughFailures(t *testing.T) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	require.NoError(t, err)
	defer dec.Close()
	rc := &ndjsonReceiver{t: t, dec: dec, lines: map[uint64]wireLine{},
		failures: []func(http.ResponseWriter){answer503, answer503, hangUp}}
	srv := httptest.NewServer(rc)
	defer srv.Close()

	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	want := fillLog(t, l, 2000, "temp", "hall/1")

	sink, err := NewHTTPSink(HTTPSinkOptions{URL: srv.URL + "/ingest", NodeID: "edge-1",
		Headers: map[string]string{"Authorization": "Bearer x"}})
	require.NoError(t, err)
	s := NewSyncer(l, sink, SyncOptions{
		BatchRecords: 300,
		Retry:        RetryOptions{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond},
		Breaker:      BreakerOptions{OpenTimeout: 50 * time.Millisecond},
	})
	s.Start()
	waitSynced(t, s, l)
	require.NoError(t, s.Close())

	rc.mu.Lock()
	defer rc.mu.Unlock()
	require.Greater(t, rc.requests, 3)
	require.GreaterOrEqual(t, rc.received, len(want))
	require.NotEmpty(t, rc.keys)
	checkLines(t, "edge-1", want, rc.lines)
}

func TestHTTPSinkAnswers(t *testing.T) {
	var status int
	var header http.Header
	var gotBody []byte
	var gotHeaders http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeaders = r.Header.Clone()
		gotBody, _ = io.ReadAll(r.Body)
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "record 7: stream "+strings.Repeat("x", 1000))
	}))
	defer srv.Close()
	sink, err := NewHTTPSink(HTTPSinkOptions{URL: srv.URL, NodeID: "edge-1", Compress: new(bool),
		Headers: map[string]string{"Authorization": "Bearer x", "Content-Type": "text/plain"}})
	require.NoError(t, err)
	defer sink.Close()

	e := event.Event{DeviceID: "d", Stream: "s", TS: 1_700_000_000_000, Value: 1}
	recs := []Record{
		{Offset: 7, Type: event.TypeEvent, Stream: "s", Payload: e.AppendBinary(nil)},
		{Offset: 9, Type: event.TypeEvent, Stream: "s", Payload: e.AppendBinary(nil)},
	}
	ctx := context.Background()

	status, header = http.StatusOK, nil
	require.NoError(t, sink.Send(ctx, recs))
	require.Equal(t, "edge-1:7-9", gotHeaders.Get("Idempotency-Key"))
	require.Equal(t, "application/x-ndjson", gotHeaders.Get("Content-Type"))
	require.Equal(t, "Bearer x", gotHeaders.Get("Authorization"))
	require.Empty(t, gotHeaders.Get("Content-Encoding"))
	require.Equal(t, 2, bytes.Count(gotBody, []byte("\n")))

	status = http.StatusBadRequest
	err = sink.Send(ctx, recs)
	require.Error(t, err)
	require.True(t, IsPermanent(err), "%v", err)
	require.Contains(t, err.Error(), "400")
	require.Contains(t, err.Error(), "record 7: stream xxx")
	require.Less(t, len(err.Error()), 700)

	status, header = http.StatusFound, http.Header{"Location": {"/elsewhere"}}
	err = sink.Send(ctx, recs)
	require.True(t, IsPermanent(err), "%v", err)
	require.Contains(t, err.Error(), "302")

	status, header = http.StatusTooManyRequests, http.Header{"Retry-After": {"3"}}
	err = sink.Send(ctx, recs)
	require.False(t, IsPermanent(err))
	d, ok := RetryAfter(err)
	require.True(t, ok)
	require.Equal(t, 3*time.Second, d)

	status, header = http.StatusBadGateway, nil
	err = sink.Send(ctx, recs)
	require.Error(t, err)
	require.False(t, IsPermanent(err))
	_, ok = RetryAfter(err)
	require.False(t, ok)
}

func TestHTTPSinkNetworkErrorIsRetryable(t *testing.T) {
	sink, err := NewHTTPSink(HTTPSinkOptions{URL: "http://" + freeAddr(t), NodeID: "edge-1"})
	require.NoError(t, err)
	defer sink.Close()
	e := event.Event{DeviceID: "d", Stream: "s", TS: 1_700_000_000_000, Value: 1}
	err = sink.Send(context.Background(), []Record{{Offset: 1, Type: event.TypeEvent, Stream: "s", Payload: e.AppendBinary(nil)}})
	require.Error(t, err)
	require.False(t, IsPermanent(err))
}

// TestHTTPSinkErrorHidesURLSecrets: a failed request's error — logged and
// shown as the sink's last_error — holds neither the URL's password nor its
// query values (net/http itself strips only the password).
func TestHTTPSinkErrorHidesURLSecrets(t *testing.T) {
	sink, err := NewHTTPSink(HTTPSinkOptions{URL: "http://u:SECRET-PASS@" + freeAddr(t) + "/in?api_key=SECRET-KEY", NodeID: "edge-1"})
	require.NoError(t, err)
	defer sink.Close()
	e := event.Event{DeviceID: "d", Stream: "s", TS: 1_700_000_000_000, Value: 1}
	err = sink.Send(context.Background(), []Record{{Offset: 1, Type: event.TypeEvent, Stream: "s", Payload: e.AppendBinary(nil)}})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "SECRET")
	require.Contains(t, err.Error(), "/in?api_key=")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"1", time.Second},
		{" 120 ", 2 * time.Minute},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{strconv.FormatInt(1<<62, 10), time.Duration(1<<63-1) / time.Second * time.Second},
	} {
		assert.Equal(t, c.want, parseRetryAfter(c.in, now), "%q", c.in)
	}
}

func TestHTTPSinkOptionsValidate(t *testing.T) {
	for _, o := range []HTTPSinkOptions{
		{NodeID: "n"},
		{URL: "ftp://x", NodeID: "n"},
		{URL: "http://", NodeID: "n"},
		{URL: "http://x"},
		{URL: "http://x", NodeID: "n", Timeout: -1},
	} {
		_, err := NewHTTPSink(o)
		assert.Error(t, err, "%+v", o)
	}
}

func TestJSONLineEdges(t *testing.T) {
	// A site-wide window leaves device_id out; records that are not synced or
	// do not decode are errors; a non-finite number (the decoders reject them
	// in records) would be null.
	w := event.WindowRecord{Stream: "s", SizeMS: 1000, Count: 1}
	p := w.AppendBinary(nil)
	line, err := appendJSONLine(nil, "n", Record{Offset: 1, Type: event.TypeWindow, Stream: "s", Payload: p})
	require.NoError(t, err)
	require.True(t, json.Valid(bytes.TrimSpace(line)), "%s", line)
	var got wireLine
	require.NoError(t, json.Unmarshal(line, &got))
	require.NotContains(t, string(got.Record), "device_id") // site-wide

	_, err = appendJSONLine(nil, "n", Record{Offset: 2, Type: event.TypeLate, Payload: []byte{event.TypeLate}})
	require.Error(t, err)
	_, err = appendJSONLine(nil, "n", Record{Offset: 3, Type: event.TypeEvent, Payload: []byte{event.TypeEvent, 9}})
	require.Error(t, err)
	require.Equal(t, []byte("null"), must(jsonFloat(math.NaN()).MarshalJSON()))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
