package uplink

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// Breaker defaults, from the seed.
const (
	DefaultBreakerFailures    = 5
	DefaultBreakerOpenTimeout = 30 * time.Second
)

// Breaker states, as State reports them.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half-open"
)

// BreakerStates lists every breaker state.
var BreakerStates = []string{BreakerClosed, BreakerOpen, BreakerHalfOpen}

// ErrOpen is returned by Breaker.Do when it fails fast: the breaker is open,
// or half-open with its one probe already in flight. The error also wraps
// gobreaker's ErrOpenState or ErrTooManyRequests.
var ErrOpen = errors.New("uplink: circuit breaker open")

// BreakerOptions configure a Breaker. Zero fields take the defaults. There is
// no clock: gobreaker reads the wall clock itself.
type BreakerOptions struct {
	// Failures is how many consecutive failures open the breaker. Default
	// DefaultBreakerFailures (5).
	Failures uint32
	// OpenTimeout is how long the breaker stays open before it lets one probe
	// through. Default DefaultBreakerOpenTimeout (30 s).
	OpenTimeout time.Duration
	// OnChange sees every state change, in order. gobreaker calls it with its
	// lock held: it must not call the Breaker.
	OnChange func(from, to string)
}

func (o BreakerOptions) withDefaults() BreakerOptions {
	if o.Failures == 0 {
		o.Failures = DefaultBreakerFailures
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = DefaultBreakerOpenTimeout
	}
	return o
}

// Breaker is a circuit breaker for one sink: closed, it passes calls through
// and counts consecutive failures; open, it fails fast; half-open, it lets a
// single probe through, whose success closes it and whose failure opens it
// again. Which errors count is said in the package comment. It is safe for
// concurrent use.
type Breaker struct {
	name string
	opts BreakerOptions // with defaults
	cb   atomic.Pointer[gobreaker.CircuitBreaker[struct{}]]
	// probing: HalfOpen let the next call through before the open timeout;
	// the breaker reports half-open until that call ends.
	probing atomic.Bool

	hookMu sync.Mutex
	hooks  []func(from, to string) // Lock hookMu.
}

// NewBreaker returns a closed breaker.
func NewBreaker(name string, o BreakerOptions) *Breaker {
	o = o.withDefaults()
	b := &Breaker{name: name, opts: o}
	if o.OnChange != nil {
		b.hooks = append(b.hooks, o.OnChange)
	}
	b.cb.Store(b.newCB())
	return b
}

// newCB returns a closed gobreaker with the options' settings.
func (b *Breaker) newCB() *gobreaker.CircuitBreaker[struct{}] {
	failures := b.opts.Failures
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        b.name,
		MaxRequests: 1,
		Timeout:     b.opts.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= failures || b.probing.Load()
		},
		IsSuccessful: func(err error) bool {
			return err == nil || IsPermanent(err)
		},
		IsExcluded: func(err error) bool {
			return errors.Is(err, context.Canceled)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			f := from.String()
			if b.probing.CompareAndSwap(true, false) {
				f = BreakerHalfOpen // the early probe failed
			}
			b.emit(f, to.String())
		},
	})
}

func (b *Breaker) emit(from, to string) {
	b.hookMu.Lock()
	hooks := b.hooks
	b.hookMu.Unlock()
	for _, h := range hooks {
		h(from, to)
	}
}

// HalfOpen turns an open breaker half-open before its timeout, because
// something cheaper than a send (a reconnected client, a probe) says the
// sink can be reached again: the next call goes through as the one probe,
// whose success closes the breaker and whose failure opens it again for a
// whole OpenTimeout. In other states it does nothing. Only the goroutine
// that calls Do may call it.
func (b *Breaker) HalfOpen() {
	if b.cb.Load().State() != gobreaker.StateOpen {
		return
	}
	b.probing.Store(true)
	b.cb.Store(b.newCB())
	b.emit(BreakerOpen, BreakerHalfOpen)
}

// Name returns the name given to NewBreaker.
func (b *Breaker) Name() string { return b.name }

// Do runs op if the breaker lets it and returns op's error unchanged. When the
// breaker fails fast it returns an error matching ErrOpen without calling op.
// A panic in op counts as a failure and is passed on.
func (b *Breaker) Do(op func() error) error {
	_, err := b.cb.Load().Execute(func() (struct{}, error) { return struct{}{}, op() })
	if (err == nil || IsPermanent(err)) && b.probing.CompareAndSwap(true, false) {
		b.emit(BreakerHalfOpen, BreakerClosed)
	}
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return &openError{name: b.name, cause: err}
	}
	return err
}

// State returns "closed", "open" or "half-open". An open breaker whose timeout
// has passed turns half-open when asked.
func (b *Breaker) State() string {
	st := b.cb.Load().State()
	if st == gobreaker.StateClosed && b.probing.Load() {
		return BreakerHalfOpen
	}
	return st.String()
}

// addHook adds a hook for state changes; see BreakerOptions.OnChange.
func (b *Breaker) addHook(h func(from, to string)) {
	b.hookMu.Lock()
	defer b.hookMu.Unlock()
	b.hooks = append(b.hooks[:len(b.hooks):len(b.hooks)], h)
}

// openError is what Do returns when it fails fast.
type openError struct {
	name  string
	cause error // gobreaker.ErrOpenState or gobreaker.ErrTooManyRequests
}

func (e *openError) Error() string {
	return "uplink: circuit breaker " + e.name + ": " + e.cause.Error()
}
func (e *openError) Is(target error) bool { return target == ErrOpen }
func (e *openError) Unwrap() error        { return e.cause }
