// Package httpin is HTTP ingest: `POST /v1/events` with one JSON object, a JSON
// array or NDJSON, optionally gzip- or zstd-compressed. It decodes and validates,
// hands the valid events to an ingest.Appender, and answers only once they are
// durable. Invalid events are reported by index and never affect valid ones.
// With Options.Auth the request must come from a device (a bearer device
// token or a client certificate, auth.go), and an event of another device or
// of a stream it may not send is one more invalid event.
//
// klauspost/compress provides the zstd decoder; gzip is the standard library's.
package httpin

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/ingest/ratelimit"
)

const transport = "http"

// Options configure the handler. Zero fields take the defaults.
type Options struct {
	MaxBodyBytes int64 // after decompression; default 16 MiB
	Limits       event.Limits
	// Admit, if set, decides per event whether the buffer's pressure lets
	// it in: "" admits, anything else is the reason it is kept out (the
	// buffer's pressure level refuses or samples its stream).
	Admit func(stream string) string
	// Auth, if set, requires every request to come from a device: a bearer
	// device token, or a verified client certificate naming an active
	// device (see authenticate). Each event must then be that device's and
	// of a stream it may send (auth.Device.CanSend); the others are
	// rejected by index.
	Auth *auth.Guard
	// Trusted, if set, says a request needs no device authentication: a
	// site member forwarding events it took from an authenticated device.
	Trusted func(r *http.Request) bool
	// Limiter, if set, is the per-device rate limit (limits.device_rate):
	// an event over its device's limit is rejected by index and not
	// stored; a request none of whose events was stored because of it is
	// answered 429 with Retry-After.
	Limiter *ratelimit.Limiter
	// Redirect, if set, may send a request's events elsewhere: a non-empty
	// URL answers 307 with it in Location, and nothing is stored (a site
	// node that does not own the device).
	Redirect func(r *http.Request, evs []event.Event) string
	Logger   *slog.Logger
	Now      func() time.Time
}

// Handler serves POST /v1/events.
type Handler struct {
	opts Options
	app  ingest.Appender
	m    *ingest.Metrics
	bufs sync.Pool // *bytes.Buffer
	zstd sync.Pool // *zstd.Decoder
	gzip sync.Pool // *gzip.Reader
}

// New returns an ingest handler that stores through app.
func New(opts Options, app ingest.Appender, m *ingest.Metrics) *Handler {
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 16 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Handler{opts: opts, app: app, m: m}
}

// Rejected is one refused event in a response.
type Rejected struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// Response is the body of every answer to POST /v1/events.
type Response struct {
	Accepted   int        `json:"accepted"`
	Duplicates int        `json:"duplicates,omitempty"`
	Rejected   []Rejected `json:"rejected"`
	Error      string     `json:"error,omitempty"` // set when the request as a whole failed
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, http.StatusMethodNotAllowed, "", "method %s not allowed; use POST", r.Method)
		return
	}
	var dev *deviceID
	trusted := h.opts.Trusted != nil && h.opts.Trusted(r)
	if h.opts.Auth != nil && !trusted {
		d, err := h.authenticate(r)
		if err != nil {
			h.refuse(w, err)
			return
		}
		dev = &d
	}
	buf := h.getBuf()
	defer h.bufs.Put(buf)
	if status, err := h.readBody(r, buf); err != nil {
		h.fail(w, status, reasonFor(status), "%v", err)
		return
	}
	body := buf.Bytes()
	if len(bytes.TrimSpace(body)) == 0 {
		h.fail(w, http.StatusBadRequest, string(event.ReasonMalformed), "empty body")
		return
	}
	ndjson := isNDJSON(r.Header.Get("Content-Type"))
	now := h.opts.Now()
	evs, rejections, err := event.ParseBatch(body, ndjson, now, h.opts.Limits)
	if err != nil {
		h.fail(w, http.StatusBadRequest, string(event.ReasonMalformed), "%v", err)
		return
	}
	if h.opts.Redirect != nil {
		if loc := h.opts.Redirect(r, evs); loc != "" {
			w.Header().Set("Location", loc)
			h.fail(w, http.StatusTemporaryRedirect, "", "this node does not serve these devices: send them to %s", loc)
			return
		}
	}
	resp := Response{Rejected: make([]Rejected, 0, len(rejections))}
	for _, rj := range rejections {
		resp.Rejected = append(resp.Rejected, Rejected{Index: rj.Index, Error: rj.Err.Error()})
		h.m.Rejected.WithLabelValues(transport, reasonOf(rj.Err)).Inc()
	}
	kept, lim := 0, limited{}
	// A site member forwarding a device's events limited them already.
	limiter := h.opts.Limiter
	if trusted {
		limiter = nil
	}
	if h.opts.Admit != nil || dev != nil || limiter != nil {
		evs, kept, lim = h.screen(evs, rejections, dev, limiter, &resp)
	}
	if len(evs) > 0 {
		start := time.Now()
		res, err := h.app.Append(r.Context(), evs)
		if err != nil {
			status := http.StatusServiceUnavailable
			if !errors.Is(err, ingest.ErrUnavailable) {
				status = http.StatusInternalServerError
			}
			h.opts.Logger.Warn("ingest failed", "events", len(evs), "err", err)
			w.Header().Set("Retry-After", "1")
			h.fail(w, status, "unavailable", "events not stored: %v", err)
			return
		}
		h.m.ObserveAck(transport, len(evs), time.Since(start))
		resp.Accepted = len(evs)
		resp.Duplicates = res.Duplicates
		h.m.Accepted.WithLabelValues(transport).Add(float64(len(evs)))
		h.m.Duplicates.WithLabelValues(transport).Add(float64(res.Duplicates))
	}
	status := http.StatusOK
	if lim.events > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, math.Ceil(lim.retry.Seconds())))))
	}
	switch {
	case resp.Accepted == 0 && lim.events > 0:
		// Nothing stored, and at least some for the device's rate limit:
		// the device should slow down and send them again.
		status = http.StatusTooManyRequests
		resp.Error = lim.explain(limiter)
	case resp.Accepted == 0 && kept > 0 && kept == len(resp.Rejected):
		// Only the buffer's pressure kept the events out: not the device's
		// fault, and it may pass later.
		status = http.StatusInsufficientStorage
		w.Header().Set("Retry-After", "60")
	case resp.Accepted == 0 && len(resp.Rejected) > 0:
		status = http.StatusBadRequest
	}
	writeJSON(w, status, resp)
}

// limited is what the rate limit refused in one request.
type limited struct {
	events  int
	devices []string      // the first few devices over their limit
	retry   time.Duration // the longest wait for a token
}

func (l *limited) add(device string, retry time.Duration) {
	l.events++
	l.retry = max(l.retry, retry)
	if len(l.devices) < 5 && !slices.Contains(l.devices, device) {
		l.devices = append(l.devices, device)
	}
}

// explain is the error of a request refused for its devices' rate limit.
func (l *limited) explain(lim *ratelimit.Limiter) string {
	r, b := lim.Rate()
	names := make([]string, len(l.devices))
	for i, d := range l.devices {
		names[i] = strconv.Quote(d)
	}
	return fmt.Sprintf("device %s over its rate limit of %g events/s (burst %d): %d events not stored; send them again after Retry-After",
		strings.Join(names, ", "), r, b, l.events)
}

// screen checks the valid events against the device that sent them (dev,
// nil without auth), applies Options.Admit, then the devices' rate limit: it
// returns those let in, how many the buffer's pressure kept out and what the
// rate limit refused; each refused event is added to resp with its index in
// the body.
func (h *Handler) screen(evs []event.Event, rejections []event.Rejection, dev *deviceID, limiter *ratelimit.Limiter, resp *Response) ([]event.Event, int, limited) {
	// Rejections come in body order: walking them alongside the events gives
	// each event its index in the body, with nothing allocated.
	in, kept, index, next, refused := evs[:0], 0, 0, 0, 0
	var lim limited
	now := limiter.Now() // once for the batch
	// The rate limit takes a run of one device's events at once: runDev's
	// next runLeft events are let through, the rest of its run refused
	// with runRetry.
	var runDev string
	runEnd, runLeft, runRetry := 0, 0, time.Duration(0)
	for i, ev := range evs {
		for next < len(rejections) && rejections[next].Index == index {
			next, index = next+1, index+1
		}
		if dev != nil {
			if err := dev.CanSend(ev.DeviceID, ev.Stream); err != nil {
				resp.Rejected = append(resp.Rejected, Rejected{Index: index, Error: dev.explain(ev, err)})
				h.m.Rejected.WithLabelValues(transport, auth.Reason(err)).Inc()
				h.opts.Auth.Metrics.Failure(auth.TransportHTTP, err)
				refused++
				index++
				continue
			}
		}
		if h.opts.Admit != nil {
			if why := h.opts.Admit(ev.Stream); why != "" {
				resp.Rejected = append(resp.Rejected, Rejected{Index: index,
					Error: fmt.Sprintf("stream %q: not stored, the buffer is under pressure (%s)", ev.Stream, why)})
				h.m.Rejected.WithLabelValues(transport, why).Inc()
				kept++
				index++
				continue
			}
		}
		if limiter != nil {
			if i >= runEnd || ev.DeviceID != runDev {
				runDev, runEnd = ev.DeviceID, i+1
				for runEnd < len(evs) && evs[runEnd].DeviceID == runDev {
					runEnd++
				}
				runLeft, runRetry = limiter.AllowUpTo(now, transport, runDev, ev.Stream, runEnd-i)
			}
			if runLeft == 0 {
				r, b := limiter.Rate()
				resp.Rejected = append(resp.Rejected, Rejected{Index: index,
					Error: fmt.Sprintf("device %q: over its rate limit of %g events/s (burst %d), not stored: send it again in %s", ev.DeviceID, r, b, max(runRetry, time.Millisecond).Round(time.Millisecond))})
				h.m.Rejected.WithLabelValues(transport, ReasonRateLimited).Inc()
				lim.add(ev.DeviceID, runRetry)
				index++
				continue
			}
			runLeft--
		}
		in = append(in, ev)
		index++
	}
	if kept+refused+lim.events > 0 && len(rejections) > 0 {
		slices.SortFunc(resp.Rejected, func(a, b Rejected) int { return a.Index - b.Index })
	}
	return in, kept, lim
}

// ReasonRateLimited is the holdfast_events_rejected_total reason of an event
// over its device's rate limit.
const ReasonRateLimited = "rate_limited"

func (h *Handler) getBuf() *bytes.Buffer {
	if b, ok := h.bufs.Get().(*bytes.Buffer); ok {
		b.Reset()
		return b
	}
	return new(bytes.Buffer)
}

// readBody reads the decompressed body into buf, enforcing MaxBodyBytes on the
// decompressed size, and returns the HTTP status to answer on failure.
func (h *Handler) readBody(r *http.Request, buf *bytes.Buffer) (int, error) {
	max := h.opts.MaxBodyBytes
	if r.ContentLength > max {
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body of %d bytes exceeds the limit of %d bytes", r.ContentLength, max)
	}
	var src io.Reader = http.MaxBytesReader(nil, r.Body, max)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, _ := h.gzip.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(src)
		} else {
			err = zr.Reset(src)
		}
		if err != nil {
			return http.StatusBadRequest, fmt.Errorf("gzip body: %v", err)
		}
		defer h.gzip.Put(zr)
		src = zr
	case "zstd":
		zd, _ := h.zstd.Get().(*zstd.Decoder)
		if zd == nil {
			var err error
			zd, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
			if err != nil {
				return http.StatusInternalServerError, err
			}
		}
		if err := zd.Reset(src); err != nil {
			return http.StatusBadRequest, fmt.Errorf("zstd body: %v", err)
		}
		defer h.zstd.Put(zd)
		src = zd
	default:
		return http.StatusUnsupportedMediaType, fmt.Errorf("Content-Encoding %q not supported; use gzip, zstd or none", enc)
	}
	n, err := buf.ReadFrom(io.LimitReader(src, max+1))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig) || n > max:
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body exceeds the limit of %d bytes", max)
	case err != nil:
		return http.StatusBadRequest, fmt.Errorf("read body: %v", err)
	}
	return 0, nil
}

func isNDJSON(contentType string) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	switch strings.ToLower(strings.TrimSpace(ct)) {
	case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines":
		return true
	}
	return false
}

func reasonOf(err error) string {
	var e *event.Error
	if errors.As(err, &e) {
		return string(e.Reason)
	}
	return "invalid"
}

func reasonFor(status int) string {
	switch status {
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnsupportedMediaType:
		return "bad_encoding"
	}
	return string(event.ReasonMalformed)
}

// fail answers a request refused as a whole. A body refused for what it holds
// counts once under reason (its events were never seen one by one); an empty
// reason or "unavailable" is not an event rejection and is not counted.
func (h *Handler) fail(w http.ResponseWriter, status int, reason, format string, args ...any) {
	if reason != "" && reason != "unavailable" {
		h.m.Rejected.WithLabelValues(transport, reason).Inc()
	}
	writeJSON(w, status, Response{Rejected: []Rejected{}, Error: fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
