package uplink

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/secret"
)

// HTTPSinkOptions configure the HTTP sink. Zero fields take the defaults.
type HTTPSinkOptions struct {
	URL     string // http(s) endpoint every batch is POSTed to
	NodeID  string
	Name    string            // sink name, default "http"
	Headers map[string]string // sent with every request, e.g. Authorization; cannot override the wire headers
	Timeout time.Duration     // one request, default 10s
	// Compress sends the body zstd-compressed; nil means true.
	Compress *bool
	// TLSConfig, if set, is the client TLS configuration for https: a CA to
	// trust, a client certificate.
	TLSConfig *tls.Config
}

// Validate reports every option that cannot work.
func (o HTTPSinkOptions) Validate() error {
	var errs []error
	u, err := url.Parse(o.URL)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("uplink: http sink: url: %w", err))
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		errs = append(errs, fmt.Errorf("uplink: http sink: url %q is not an http(s) URL", secret.RedactURL(o.URL)))
	}
	if o.NodeID == "" {
		errs = append(errs, errors.New("uplink: http sink: node id is empty"))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("uplink: http sink: timeout %v is negative", o.Timeout))
	}
	return errors.Join(errs...)
}

// HTTPSink POSTs each batch as one NDJSON request, as docs/format/sinks.md
// lays out. The receiver confirms a batch with a 2xx answer; it deduplicates
// per line by node_id and offset, since a batch is resent whole after a
// failure and may be cut differently after a restart. Resume has nothing to
// ask the receiver, so every unconfirmed record is sent again.
type HTTPSink struct {
	o      HTTPSinkOptions
	tr     *http.Transport
	client *http.Client
	enc    *zstd.Encoder // nil when not compressing

	// Used by the syncer's goroutine only.
	body []byte
	zbuf []byte
}

// NewHTTPSink returns a sink, or the options' Validate error.
func NewHTTPSink(o HTTPSinkOptions) (*HTTPSink, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = "http"
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Compress == nil {
		o.Compress = new(bool)
		*o.Compress = true
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if o.TLSConfig != nil {
		tr.TLSClientConfig = o.TLSConfig
	}
	s := &HTTPSink{o: o, tr: tr, client: &http.Client{
		Transport: tr,
		Timeout:   o.Timeout,
		// A 301, 302 or 303 would turn the POST into a GET without the body,
		// whose 2xx would confirm records that never arrived.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	if *o.Compress {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("uplink: http sink: zstd: %w", err)
		}
		s.enc = enc
	}
	return s, nil
}

func (s *HTTPSink) Name() string { return s.o.Name }

// Probe dials the receiver's host (Prober).
func (s *HTTPSink) Probe(ctx context.Context) error { return dialProbe(ctx, s.o.URL) }

// Resume returns nil: the receiver is not asked what it holds.
func (s *HTTPSink) Resume(context.Context, map[Lane]uint64, map[string]uint64) error { return nil }

// Positions returns nil: the HTTP sink saves no positions.
func (s *HTTPSink) Positions() map[string]uint64 { return nil }

// Close releases idle connections and the compressor.
func (s *HTTPSink) Close() error {
	s.tr.CloseIdleConnections()
	if s.enc != nil {
		return s.enc.Close()
	}
	return nil
}

// errorExcerpt is how much of a rejecting answer's body an error quotes.
const errorExcerpt = 512

// Send POSTs recs in one request. A 2xx answer confirms them; 408, 429, 5xx
// and network errors are retryable, honouring Retry-After; any other answer,
// a redirect included, is a Permanent error quoting the status and the start
// of the body.
func (s *HTTPSink) Send(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	body := s.body[:0]
	for _, r := range recs {
		var err error
		if body, err = appendJSONLine(body, s.o.NodeID, r); err != nil {
			return Permanent(err)
		}
	}
	s.body = body
	if s.enc != nil {
		s.zbuf = s.enc.EncodeAll(body, s.zbuf[:0])
		body = s.zbuf
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.o.URL, bytes.NewReader(body))
	if err != nil {
		return Permanent(fmt.Errorf("http sink: %w", err))
	}
	for k, v := range s.o.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if s.enc != nil {
		req.Header.Set("Content-Encoding", "zstd")
	} else {
		req.Header.Del("Content-Encoding")
	}
	req.Header.Set("Idempotency-Key", IdempotencyKey(s.o.NodeID, recs))
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = secret.RedactURL(ue.URL) // net/http strips the password, not the query
		}
		return Retryable(fmt.Errorf("post %d records: %w", len(recs), err), 0)
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, errorExcerpt))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection can be reused
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	err = fmt.Errorf("post %d records: %s: %s", len(recs), resp.Status, quoteExcerpt(excerpt))
	if code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 {
		return Retryable(err, parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()))
	}
	return Permanent(err)
}

// IdempotencyKey is the Idempotency-Key of a batch: "<node_id>:<first
// offset>-<last offset>". It is the same for every retry of the batch, but a
// restart may cut batches differently; receivers dedup per line.
func IdempotencyKey(nodeID string, recs []Record) string {
	if len(recs) == 0 {
		return nodeID + ":"
	}
	return nodeID + ":" + strconv.FormatUint(recs[0].Offset, 10) + "-" + strconv.FormatUint(recs[len(recs)-1].Offset, 10)
}

// quoteExcerpt quotes a body excerpt for an error message, valid UTF-8 only.
func quoteExcerpt(b []byte) string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(b), "\uFFFD"))
	if len(b) == errorExcerpt {
		s += "…"
	}
	return strconv.Quote(s)
}

// parseRetryAfter reads a Retry-After value, delay-seconds or an HTTP date,
// as a wait from now; 0 when absent, malformed or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, math.MaxInt64/int64(time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Record kinds on the wire (docs/format/sinks.md).
const (
	lineTypeEvent     = "event"
	lineTypeWindow    = "window"
	lineTypeAlert     = "alert"
	lineTypeWatermark = "watermark"
)

// lineType is the "type" of a record's JSON line, "" for kinds not synced.
// Takes reports whether the HTTP sink sends records of type t: those the JSON
// line has a type for (late marks are not sent, docs/format/sinks.md).
func (s *HTTPSink) Takes(t byte) bool { return lineType(t) != "" }

// Takes reports whether the MQTT bridge sends records of type t; as for HTTP.
func (s *MQTTSink) Takes(t byte) bool { return lineType(t) != "" }

func lineType(t byte) string {
	switch t {
	case event.TypeEvent:
		return lineTypeEvent
	case event.TypeWindow:
		return lineTypeWindow
	case event.TypeAlert:
		return lineTypeAlert
	case event.TypeWatermark:
		return lineTypeWatermark
	}
	return ""
}

const jsonTimeLayout = "2006-01-02T15:04:05.000Z07:00"

func jsonMillis(ms int64) string { return time.UnixMilli(ms).UTC().Format(jsonTimeLayout) }

// jsonFloat encodes as encoding/json does, and a non-finite value (never in a
// valid record) as null instead of failing.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(v)
}

type windowLine struct {
	Stream   string    `json:"stream"`
	DeviceID string    `json:"device_id,omitempty"`
	Size     string    `json:"size"`
	Start    string    `json:"start"`
	End      string    `json:"end"`
	Count    uint64    `json:"count"`
	Sum      jsonFloat `json:"sum"`
	Overflow bool      `json:"overflow,omitempty"`
	Min      jsonFloat `json:"min"`
	Max      jsonFloat `json:"max"`
	Mean     jsonFloat `json:"mean"`
	Last     jsonFloat `json:"last"`
	P50      jsonFloat `json:"p50"`
	P95      jsonFloat `json:"p95"`
	P99      jsonFloat `json:"p99"`
	ID       string    `json:"id"`
}

type alertLine struct {
	ID         string    `json:"id"`
	Rule       string    `json:"rule"`
	Severity   string    `json:"severity"`
	State      string    `json:"state"`
	Stream     string    `json:"stream"`
	DeviceID   string    `json:"device_id"`
	Value      jsonFloat `json:"value"`
	Threshold  jsonFloat `json:"threshold"`
	FiredAt    string    `json:"fired_at"`
	ResolvedAt string    `json:"resolved_at,omitempty"`
}

type watermarkLine struct {
	Stream    string `json:"stream"`
	Watermark string `json:"watermark"`
}

// recordJSON appends the JSON object of a record's payload.
func recordJSON(dst []byte, r Record) ([]byte, error) {
	var v any
	switch r.Type {
	case event.TypeEvent:
		e, err := event.DecodeBinary(r.Payload)
		if err != nil {
			return dst, err
		}
		return e.AppendJSON(dst), nil
	case event.TypeWindow:
		w, err := event.DecodeWindow(r.Payload)
		if err != nil {
			return dst, err
		}
		v = windowLine{
			Stream: w.Stream, DeviceID: w.DeviceID, Size: (time.Duration(w.SizeMS) * time.Millisecond).String(),
			Start: jsonMillis(w.Start), End: jsonMillis(w.Start + w.SizeMS), Count: w.Count,
			Sum: jsonFloat(w.Sum), Overflow: w.Overflow, Min: jsonFloat(w.Min), Max: jsonFloat(w.Max), Mean: jsonFloat(w.Mean()),
			Last: jsonFloat(w.Last), P50: jsonFloat(w.P50), P95: jsonFloat(w.P95), P99: jsonFloat(w.P99),
			ID: w.ID(),
		}
	case event.TypeAlert:
		a, err := event.DecodeAlert(r.Payload)
		if err != nil {
			return dst, err
		}
		l := alertLine{
			ID: a.ID(), Rule: a.Rule, Severity: a.Severity, State: "resolved", Stream: a.Stream,
			DeviceID: a.DeviceID, Value: jsonFloat(a.Value), Threshold: jsonFloat(a.Threshold),
			FiredAt: jsonMillis(a.FiredAt),
		}
		if a.Firing {
			l.State = "firing"
		}
		if a.ResolvedAt != 0 {
			l.ResolvedAt = jsonMillis(a.ResolvedAt)
		}
		v = l
	case event.TypeWatermark:
		w, err := event.DecodeWatermark(r.Payload)
		if err != nil {
			return dst, err
		}
		v = watermarkLine{Stream: w.Stream, Watermark: jsonMillis(w.Watermark)}
	default:
		return dst, fmt.Errorf("record type %#x is not synced", r.Type)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// appendJSONLine appends a record's line of the wire format, newline
// included:
//
//	{"node_id":..,"offset":N,"type":"event","stream":..,"lane":"normal","record":{..}}
func appendJSONLine(dst []byte, nodeID string, r Record) ([]byte, error) {
	typ := lineType(r.Type)
	if typ == "" {
		return dst, fmt.Errorf("record %d: type %#x is not synced", r.Offset, r.Type)
	}
	n := len(dst)
	node, _ := json.Marshal(nodeID) // a string cannot fail
	stream, _ := json.Marshal(r.Stream)
	dst = append(dst, `{"node_id":`...)
	dst = append(dst, node...)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, r.Offset, 10)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, `","stream":`...)
	dst = append(dst, stream...)
	dst = append(dst, `,"lane":"`...)
	dst = append(dst, r.Lane.String()...)
	dst = append(dst, `","record":`...)
	dst, err := recordJSON(dst, r)
	if err != nil {
		return dst[:n], fmt.Errorf("record %d: %w", r.Offset, err)
	}
	return append(dst, "}\n"...), nil
}
