package alert

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hookServer is a webhook receiver whose answers a test scripts.
type hookServer struct {
	*httptest.Server
	mu        sync.Mutex
	calls     int           // guarded by mu
	delivered []string      // bodies answered with 2xx; guarded by mu
	headers   []http.Header // of delivered requests; guarded by mu
}

// newHookServer answers call n (from 1) with respond(n, w); a 2xx answer records
// the body as delivered.
func newHookServer(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request) int) *hookServer {
	h := &hookServer{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.calls++
		n := h.calls
		h.mu.Unlock()
		code := respond(n, w, r)
		if code >= 200 && code < 300 {
			h.mu.Lock()
			h.delivered = append(h.delivered, string(body))
			h.headers = append(h.headers, r.Header.Clone())
			h.mu.Unlock()
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) Calls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

func (h *hookServer) Delivered() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.delivered...)
}

// fastRetry keeps tests quick: a few short waits.
func fastRetry(tries int) RetryOptions {
	return RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Second, MaxTries: tries}
}

func closeNotifier(t *testing.T, n Notifier) {
	if c, ok := n.(io.Closer); ok {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}
}

// TestWebhookRetries: three 503s, one with Retry-After: 1, then success — the
// alert arrives once, with the right JSON and headers, and the Retry-After was
// the wait before the next attempt.
func TestWebhookRetries(t *testing.T) {
	srv := newHookServer(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		switch n {
		case 1, 3:
			return http.StatusServiceUnavailable
		case 2:
			w.Header().Set("Retry-After", "1")
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	var mu sync.Mutex
	var waits []time.Duration
	a := sample("hot", Critical)
	n := NewWebhook(WebhookOptions{
		URL:     srv.URL + "/hooks/alerts?token=s3cret",
		Headers: map[string]string{"Authorization": "Bearer abc"},
		Retry:   fastRetry(10),
		onRetry: func(_ error, wait time.Duration) { mu.Lock(); waits = append(waits, wait); mu.Unlock() },
	})
	defer closeNotifier(t, n)
	if n.Name() != "webhook" {
		t.Fatalf("name %q", n.Name())
	}
	if err := n.Notify(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if got := srv.Calls(); got != 4 {
		t.Fatalf("%d calls, want 4", got)
	}
	want := `{"id":"hot/d1/1700000000123","rule":"hot","severity":"critical","state":"firing","stream":"temperature",` +
		`"device_id":"d1","value":31.5,"threshold":30,"fired_at":"2023-11-14T22:13:20.123Z"}`
	if got := srv.Delivered(); len(got) != 1 || got[0] != want {
		t.Fatalf("delivered %q\nwant [%s]", got, want)
	}
	srv.mu.Lock()
	h := srv.headers[0]
	srv.mu.Unlock()
	if h.Get("Content-Type") != "application/json" || h.Get("Authorization") != "Bearer abc" ||
		h.Get("Idempotency-Key") != "hot/d1/1700000000123/firing" {
		t.Fatalf("headers %v", h)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(waits) != 3 || waits[1] != time.Second || waits[0] >= time.Second || waits[2] >= time.Second {
		t.Fatalf("waits %v: want three, the second the server's Retry-After of 1s", waits)
	}
}

// TestWebhookStatuses: which answers are retried and which fail at once.
func TestWebhookStatuses(t *testing.T) {
	for _, tc := range []struct {
		code      int
		calls     int // with MaxTries 3
		rejected  bool
		delivered bool
	}{
		{200, 1, false, true},
		{202, 1, false, true},
		{400, 1, true, false},
		{401, 1, true, false},
		{404, 1, true, false},
		{422, 1, true, false},
		{429, 3, false, false},
		{500, 3, false, false},
		{502, 3, false, false},
		{503, 3, false, false},
	} {
		t.Run(http.StatusText(tc.code), func(t *testing.T) {
			srv := newHookServer(t, func(int, http.ResponseWriter, *http.Request) int { return tc.code })
			n := NewWebhook(WebhookOptions{URL: srv.URL + "/?token=s3cret", Retry: fastRetry(3)})
			defer closeNotifier(t, n)
			err := n.Notify(context.Background(), sample("hot", Warning))
			if got := srv.Calls(); got != tc.calls {
				t.Errorf("%d calls, want %d", got, tc.calls)
			}
			if (err == nil) != tc.delivered || errors.Is(err, ErrRejected) != tc.rejected {
				t.Errorf("error %v", err)
			}
			if err != nil && (!strings.Contains(err.Error(), "status "+strconv.Itoa(tc.code)) || strings.Contains(err.Error(), "s3cret")) {
				t.Errorf("error %q should name the status and hide the query", err)
			}
		})
	}
}

// TestWebhookUnreachable: network errors are retried, then reported without the
// URL's query.
func TestWebhookUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/hook?token=s3cret"
	srv.Close()
	tries := 0
	n := NewWebhook(WebhookOptions{URL: url, Retry: fastRetry(3), onRetry: func(error, time.Duration) { tries++ }})
	defer closeNotifier(t, n)
	err := n.Notify(context.Background(), sample("hot", Critical))
	if err == nil || tries != 2 || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "/hook") {
		t.Fatalf("error %v after %d retries", err, tries)
	}
}

// TestWebhookTimeoutAndCancel: an attempt that hangs times out and is retried;
// cancelling the context ends Notify during a long Retry-After wait.
func TestWebhookTimeoutAndCancel(t *testing.T) {
	srv := newHookServer(t, func(n int, w http.ResponseWriter, r *http.Request) int {
		if n <= 2 {
			<-r.Context().Done() // hang until the client gives up
			return http.StatusOK
		}
		w.Header().Set("Retry-After", "3600")
		return http.StatusTooManyRequests
	})
	n := NewWebhook(WebhookOptions{URL: srv.URL, Timeout: 50 * time.Millisecond, Retry: fastRetry(2)})
	err := n.Notify(context.Background(), sample("hot", Warning))
	if !errors.Is(err, context.DeadlineExceeded) || srv.Calls() != 2 {
		t.Fatalf("error %v after %d calls", err, srv.Calls())
	}
	closeNotifier(t, n)

	waiting := make(chan time.Duration, 1)
	n = NewWebhook(WebhookOptions{URL: srv.URL, Retry: RetryOptions{MaxInterval: time.Hour},
		onRetry: func(_ error, d time.Duration) { waiting <- d }})
	defer closeNotifier(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Notify(ctx, sample("hot", Warning)) }()
	select {
	case d := <-waiting:
		if d != time.Hour {
			t.Errorf("wait %s, want Retry-After 3600s capped at MaxInterval 1h", d)
		}
	case <-time.After(waitFor):
		t.Fatal("no retry")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Notify did not return after cancel")
	}
}

func TestWebhookOptions(t *testing.T) {
	for _, tc := range []struct {
		o    WebhookOptions
		want string
	}{
		{WebhookOptions{URL: "http://example.com/x"}, ""},
		{WebhookOptions{URL: ""}, `webhook webhook: url "" must be an absolute http or https URL`},
		{WebhookOptions{URL: "ftp://example.com"}, `webhook webhook: url "ftp://example.com" must be an absolute http or https URL`},
		{WebhookOptions{URL: "http://h", Timeout: -1}, "webhook webhook: timeout -1ns must not be negative"},
		{WebhookOptions{URL: "http://h", Retry: RetryOptions{Multiplier: 0.5}}, "webhook webhook: retry: multiplier 0.5 must be at least 1"},
		{WebhookOptions{URL: "http://h", Retry: RetryOptions{RandomizationFactor: 1}}, "webhook webhook: retry: randomization_factor 1 must be in [0, 1)"},
		{WebhookOptions{URL: "http://h", Retry: RetryOptions{InitialInterval: time.Minute, MaxInterval: time.Second}},
			"webhook webhook: retry: max_interval 1s must be at least initial_interval 1m0s"},
		// The name is in the notifier's cursor, "=notify:<name>[-n]", at most
		// 255 bytes: a longer one could never be saved, and the notifier would
		// start again at each restart where a new one does.
		{WebhookOptions{Name: strings.Repeat("w", MaxNotifierName), URL: "http://h"}, ""},
		{WebhookOptions{Name: strings.Repeat("w", MaxNotifierName+1), URL: "http://h"},
			"webhook " + strings.Repeat("w", MaxNotifierName+1) + ": name longer than 200 bytes"},
	} {
		err := tc.o.WithDefaults().Validate()
		if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || err.Error() != tc.want)) {
			t.Errorf("%+v: error %v, want %q", tc.o, err, tc.want)
		}
		if tc.want != "" {
			n := NewWebhook(tc.o)
			if err := n.Notify(context.Background(), sample("x", Info)); err == nil || err.Error() != tc.want {
				t.Errorf("Notify with invalid options: %v", err)
			}
		}
	}
	d := RetryOptions{}.WithDefaults()
	if d != (RetryOptions{InitialInterval: 100 * time.Millisecond, MaxInterval: time.Minute, Multiplier: 2,
		RandomizationFactor: 0.1, MaxTries: 10}) {
		t.Fatalf("retry defaults %+v are not the seed's", d)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		h    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{"-3", 0, true},
		{"soon", 0, false},
		{"Mon, 01 Jan 2024 00:00:30 GMT", 30 * time.Second, true},
		{"Sun, 31 Dec 2023 23:00:00 GMT", 0, true},
	} {
		d, ok := retryAfter(tc.h, now)
		if d != tc.want || ok != tc.ok {
			t.Errorf("%q: %s %t, want %s %t", tc.h, d, ok, tc.want, tc.ok)
		}
	}
}
