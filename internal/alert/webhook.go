package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/holdfast-edge/holdfast/internal/secret"
)

// ErrRejected marks a delivery the receiver refused for good (an HTTP 4xx other
// than 429): it is not retried.
var ErrRejected = errors.New("alert: notification rejected")

// RetryOptions shape a notifier's retries: exponential backoff with jitter. Zero
// fields take the seed's defaults.
type RetryOptions struct {
	InitialInterval     time.Duration `yaml:"initial_interval"`     // default 100ms
	MaxInterval         time.Duration `yaml:"max_interval"`         // default 60s; also caps Retry-After
	Multiplier          float64       `yaml:"multiplier"`           // default 2
	RandomizationFactor float64       `yaml:"randomization_factor"` // default 0.1 (±10 %)
	MaxTries            int           `yaml:"max_tries"`            // attempts in all, default 10
}

// WithDefaults returns o with zero fields set to the seed's defaults.
func (o RetryOptions) WithDefaults() RetryOptions {
	if o.InitialInterval == 0 {
		o.InitialInterval = 100 * time.Millisecond
	}
	if o.MaxInterval == 0 {
		o.MaxInterval = 60 * time.Second
	}
	if o.Multiplier == 0 {
		o.Multiplier = 2
	}
	if o.RandomizationFactor == 0 {
		o.RandomizationFactor = 0.1
	}
	if o.MaxTries == 0 {
		o.MaxTries = 10
	}
	return o
}

// Validate reports the first out-of-range field. Zero fields are valid.
func (o RetryOptions) Validate() error {
	switch {
	case o.InitialInterval < 0:
		return fmt.Errorf("retry: initial_interval %s must not be negative", o.InitialInterval)
	case o.MaxInterval < 0:
		return fmt.Errorf("retry: max_interval %s must not be negative", o.MaxInterval)
	case o.MaxInterval != 0 && o.MaxInterval < o.InitialInterval:
		return fmt.Errorf("retry: max_interval %s must be at least initial_interval %s", o.MaxInterval, o.InitialInterval)
	case o.Multiplier != 0 && o.Multiplier < 1:
		return fmt.Errorf("retry: multiplier %g must be at least 1", o.Multiplier)
	case o.RandomizationFactor < 0 || o.RandomizationFactor >= 1:
		return fmt.Errorf("retry: randomization_factor %g must be in [0, 1)", o.RandomizationFactor)
	case o.MaxTries < 0:
		return fmt.Errorf("retry: max_tries %d must not be negative", o.MaxTries)
	}
	return nil
}

// retry runs op until it succeeds, fails permanently, has been tried MaxTries
// times or ctx is done. o must have its defaults. onRetry, if set, sees each
// failure and the wait before the next attempt.
func retry(ctx context.Context, o RetryOptions, onRetry func(error, time.Duration), op func() error) error {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     o.InitialInterval,
		MaxInterval:         o.MaxInterval,
		Multiplier:          o.Multiplier,
		RandomizationFactor: o.RandomizationFactor,
	}
	opts := []backoff.RetryOption{
		backoff.WithBackOff(b),
		backoff.WithMaxTries(uint(o.MaxTries)),
		backoff.WithMaxElapsedTime(0), // MaxTries bounds the attempts, not the library's 15 min
	}
	if onRetry != nil {
		opts = append(opts, backoff.WithNotify(onRetry))
	}
	_, err := backoff.Retry(ctx, func() (struct{}, error) { return struct{}{}, op() }, opts...)
	return err
}

// WebhookOptions configure a webhook notifier.
type WebhookOptions struct {
	Name    string        `yaml:"name"`             // default "webhook"
	URL     string        `yaml:"url" secret:"url"` // http or https; required
	Timeout time.Duration `yaml:"timeout"`          // per attempt, default 5s
	Retry   RetryOptions  `yaml:"retry"`
	// Headers are added to every request, e.g. Authorization. Every value is
	// a secret (internal/secret): any header may carry a credential.
	Headers map[string]string `yaml:"headers" secret:"true"`

	onRetry func(err error, wait time.Duration) // test hook: each retry and its wait
}

// WithDefaults returns o with zero fields set to their defaults.
func (o WebhookOptions) WithDefaults() WebhookOptions {
	if o.Name == "" {
		o.Name = "webhook"
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	o.Retry = o.Retry.WithDefaults()
	return o
}

// Validate reports the first problem with the options.
func (o WebhookOptions) Validate() error {
	if len(o.Name) > MaxNotifierName {
		return fmt.Errorf("webhook %s: name longer than %d bytes", o.Name, MaxNotifierName)
	}
	u, err := url.Parse(o.URL)
	if err != nil {
		return fmt.Errorf("webhook %s: url: %w", o.Name, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook %s: url %q must be an absolute http or https URL", o.Name, secret.RedactURL(o.URL))
	}
	if o.Timeout < 0 {
		return fmt.Errorf("webhook %s: timeout %s must not be negative", o.Name, o.Timeout)
	}
	if err := o.Retry.Validate(); err != nil {
		return fmt.Errorf("webhook %s: %w", o.Name, err)
	}
	return nil
}

// NewWebhook returns a notifier that POSTs each alert's JSON to o.URL. A 2xx
// response is delivery. 5xx, 429 and network errors are retried with backoff,
// honouring Retry-After up to the retry's MaxInterval; any other status fails at
// once with ErrRejected. Each request carries an Idempotency-Key header, alert
// id + "/" + state, so a receiver can drop the duplicates that retries make.
// Invalid options make every Notify fail without a request. The notifier's Close
// releases idle connections.
func NewWebhook(o WebhookOptions) Notifier {
	o = o.WithDefaults()
	w := &webhook{o: o, invalid: o.Validate()}
	if w.invalid == nil {
		u, _ := url.Parse(o.URL)
		w.where = u.Scheme + "://" + u.Host + u.Path // no credentials or query in errors
		tr, ok := http.DefaultTransport.(*http.Transport)
		if !ok {
			tr = &http.Transport{Proxy: http.ProxyFromEnvironment}
		}
		w.client = &http.Client{Transport: tr.Clone()}
	}
	return w
}

type webhook struct {
	o       WebhookOptions
	invalid error
	where   string
	client  *http.Client
}

func (w *webhook) Name() string { return w.o.Name }

func (w *webhook) Close() error {
	if w.client != nil {
		w.client.CloseIdleConnections()
	}
	return nil
}

func (w *webhook) Notify(ctx context.Context, a Alert) error {
	if w.invalid != nil {
		return w.invalid
	}
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("webhook %s: encode alert %s: %w", w.o.Name, a.ID, err)
	}
	err = retry(ctx, w.o.Retry, w.o.onRetry, func() error { return w.post(ctx, a, body) })
	if err != nil {
		return fmt.Errorf("webhook %s: %w", w.o.Name, err)
	}
	return nil
}

// post makes one attempt. Its error is permanent, carries a Retry-After, or is
// retryable.
func (w *webhook) post(ctx context.Context, a Alert, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.o.URL, bytes.NewReader(body))
	if err != nil {
		return backoff.Permanent(fmt.Errorf("post %s: %w", w.where, err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "holdfast")
	req.Header.Set("Idempotency-Key", a.ID+"/"+string(a.State))
	for k, v := range w.o.Headers {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = w.where
		}
		return err
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection can be reused
	_ = resp.Body.Close()
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code >= 500:
		err := fmt.Errorf("post %s: status %d: %s", w.where, code, strings.TrimSpace(string(snippet)))
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			err = fmt.Errorf("%w: %w", err, &backoff.RetryAfterError{Duration: min(d, w.o.Retry.MaxInterval)})
		}
		return err
	default:
		return backoff.Permanent(fmt.Errorf("%w: post %s: status %d: %s", ErrRejected, w.where, code,
			strings.TrimSpace(string(snippet))))
	}
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(h); err == nil {
		return time.Duration(min(max(s, 0), 1<<30)) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}
