package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// httpDriver posts NDJSON batches to /v1/events over a fixed number of
// keep-alive connections, one worker each. Every device belongs to one worker,
// which fills each batch round-robin from its devices, so a batch carries
// events of several devices and each device's events go out in order.
type httpDriver struct {
	r         *run
	url       string
	transport *http.Transport
	client    *http.Client
	workers   []*httpWorker
	// send, if set, delivers a batch instead of post (jetstream.go), and
	// closeConns closes what it uses.
	send       func(ctx context.Context, w *httpWorker, n int) (ingestResponse, int, string, error)
	closeConns func()
}

type httpWorker struct {
	devices []*device
	next    int          // index into devices of the next event's device
	body    []byte       // the batch being sent, reused
	resp    bytes.Buffer // the response being read, reused
	sent    []sentEvent  // the batch's events, kept only for onAck
	ack     histogram
	lag     histogram
}

type sentEvent struct {
	device *device
	ts     int64
	value  float64
}

// ingestResponse is the body of a POST /v1/events answer.
type ingestResponse struct {
	Accepted int               `json:"accepted"`
	Rejected []json.RawMessage `json:"rejected"`
	Error    string            `json:"error"`
}

// failureBackoff is how long a connection pauses after a failed request.
const failureBackoff = 100 * time.Millisecond

func newHTTPDriver(r *run, addr string) *httpDriver {
	c := r.opts.Connections
	t := &http.Transport{
		MaxIdleConns:        c,
		MaxIdleConnsPerHost: c,
		MaxConnsPerHost:     c,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
		WriteBufferSize:     64 << 10,
	}
	d := &httpDriver{r: r, url: "http://" + addr + "/v1/events", transport: t, client: &http.Client{Transport: t}}
	devs := newDevices(r.opts.Devices)
	d.workers = make([]*httpWorker, c)
	for i := range d.workers {
		d.workers[i] = &httpWorker{body: make([]byte, 0, r.opts.Batch*96)}
	}
	for i, dev := range devs {
		w := d.workers[i%c]
		w.devices = append(w.devices, dev)
	}
	return d
}

// connect does nothing: connections are opened by the first requests.
func (d *httpDriver) connect(context.Context) error { return nil }

func (d *httpDriver) load(ctx, hard context.Context) {
	var wg sync.WaitGroup
	for _, w := range d.workers {
		wg.Go(func() { d.work(ctx, hard, w) })
	}
	wg.Wait()
}

func (d *httpDriver) latency() (ack, lag *histogram) {
	ack, lag = new(histogram), new(histogram)
	for _, w := range d.workers {
		ack.merge(&w.ack)
		lag.merge(&w.lag)
	}
	return ack, lag
}

func (d *httpDriver) close() {
	d.transport.CloseIdleConnections()
	if d.closeConns != nil {
		d.closeConns()
	}
}

// work sends batches until the schedule runs out or ctx is done. At a fixed
// rate a batch is due when its last event is (the batch is full then), and its
// latency runs from that time.
func (d *httpDriver) work(ctx, hard context.Context, w *httpWorker) {
	r := d.r
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		seq, n := r.sched.claim(r.opts.Batch)
		if n == 0 {
			return
		}
		due := r.sched.due(seq + int64(n) - 1)
		if dl, ok := ctx.Deadline(); ok && !due.IsZero() && !due.Before(dl) {
			return
		}
		ts := due
		if ts.IsZero() {
			ts = time.Now()
		}
		w.build(n, ts.UnixMilli(), r.opts.onAck != nil)
		if !sleepUntil(ctx, timer, due) {
			return
		}
		sentAt := time.Now()
		from := sentAt
		if !due.IsZero() {
			from = due
			w.lag.record(sentAt.Sub(due))
		}
		r.sent.Add(int64(n))
		var (
			res    ingestResponse
			status int
			kind   string
			err    error
		)
		if d.send != nil {
			res, status, kind, err = d.send(hard, w, n)
		} else {
			res, status, kind, err = d.post(hard, w)
		}
		now := time.Now()
		if err != nil || status/100 != 2 {
			if err == nil {
				kind, err = fmt.Sprintf("http_%d", status), errors.New(res.Error)
			}
			r.fail(kind, n, err)
			// Back off a little, as a device would, rather than spin on a failing node.
			if !sleepUntil(ctx, timer, now.Add(failureBackoff)) {
				return
			}
			continue
		}
		w.ack.record(now.Sub(from))
		if res.Accepted > 0 {
			r.ack(now, res.Accepted)
		}
		if len(res.Rejected) > 0 {
			r.fail("rejected", len(res.Rejected), fmt.Errorf("%s", res.Rejected[0]))
		}
		if miss := n - res.Accepted - len(res.Rejected); miss != 0 {
			r.fail("count_mismatch", miss, fmt.Errorf("%d events sent, %d accepted, %d rejected", n, res.Accepted, len(res.Rejected)))
		}
		if r.opts.onAck != nil && res.Accepted == n {
			for _, e := range w.sent {
				r.opts.onAck(e.device.id, e.ts, e.value)
			}
		}
	}
}

// build encodes the worker's next n events, time-stamped ts, into w.body.
func (w *httpWorker) build(n int, ts int64, keep bool) {
	w.body = w.body[:0]
	w.sent = w.sent[:0]
	for range n {
		dev := w.devices[w.next]
		w.next++
		if w.next == len(w.devices) {
			w.next = 0
		}
		var v float64
		w.body, v = dev.appendNDJSON(w.body, ts)
		if keep {
			w.sent = append(w.sent, sentEvent{dev, ts, v})
		}
	}
}

// post sends w.body and decodes the answer; on failure it says what kind of
// failure it was. It returns only once the transport is done with w.body.
func (d *httpDriver) post(ctx context.Context, w *httpWorker) (res ingestResponse, status int, kind string, err error) {
	body := &requestBody{Reader: bytes.NewReader(w.body), closed: make(chan struct{})}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, body)
	if err != nil {
		return res, 0, "request_failed", err
	}
	req.ContentLength = int64(len(w.body))
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := d.client.Do(req)
	defer body.wait()
	if err != nil {
		return res, 0, requestErrorKind(ctx), err
	}
	defer resp.Body.Close()
	w.resp.Reset()
	if _, err := w.resp.ReadFrom(resp.Body); err != nil {
		return res, 0, requestErrorKind(ctx), err
	}
	// Error answers carry the same shape, with "error" set.
	if err := json.Unmarshal(w.resp.Bytes(), &res); err != nil && resp.StatusCode/100 == 2 {
		return res, 0, "undecodable_response", err
	}
	return res, resp.StatusCode, "", nil
}

func requestErrorKind(ctx context.Context) string {
	if ctx.Err() != nil {
		return "timeout"
	}
	return "request_failed"
}

// requestBody lets the sender know when the transport has finished with the
// request body, which it may do after the response has arrived.
type requestBody struct {
	*bytes.Reader
	once   sync.Once
	closed chan struct{}
}

func (b *requestBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

func (b *requestBody) wait() { <-b.closed }
