package uplink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// NoJitter asks for no randomization; a zero RandomizationFactor means the
// default.
const NoJitter = -1.0

// DefaultRetryOptions are the seed's numbers; zero RetryOptions fields take them.
var DefaultRetryOptions = RetryOptions{
	InitialInterval:     100 * time.Millisecond,
	MaxInterval:         60 * time.Second,
	Multiplier:          2,
	RandomizationFactor: 0.1,
	MaxTries:            10,
}

// RetryOptions time the attempts of Retry and the delays of a Backoff. Zero
// fields take DefaultRetryOptions.
type RetryOptions struct {
	// InitialInterval is the delay after the first failure.
	InitialInterval time.Duration
	// MaxInterval caps every delay, jittered or asked for by a RetryableError.
	MaxInterval time.Duration
	// Multiplier grows the delay after each failure; at least 1.
	Multiplier float64
	// RandomizationFactor spreads each delay uniformly over ±factor of it; in
	// [0, 1), or NoJitter.
	RandomizationFactor float64
	// MaxTries is the number of attempts in all, the first included; negative
	// means no limit but the context. Backoff ignores it.
	MaxTries int
}

func (o RetryOptions) withDefaults() RetryOptions {
	d := DefaultRetryOptions
	if o.InitialInterval == 0 {
		o.InitialInterval = d.InitialInterval
	}
	if o.MaxInterval == 0 {
		o.MaxInterval = max(d.MaxInterval, o.InitialInterval)
	}
	if o.Multiplier == 0 {
		o.Multiplier = d.Multiplier
	}
	switch o.RandomizationFactor {
	case 0:
		o.RandomizationFactor = d.RandomizationFactor
	case NoJitter:
		o.RandomizationFactor = 0
	}
	if o.MaxTries == 0 {
		o.MaxTries = d.MaxTries
	}
	return o
}

// Validate reports every option that cannot work. Zero fields are valid.
func (o RetryOptions) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("uplink: retry: "+format, args...))
	}
	if o.InitialInterval < 0 {
		bad("initial interval %v is negative", o.InitialInterval)
	}
	if o.MaxInterval < 0 {
		bad("max interval %v is negative", o.MaxInterval)
	}
	if o.Multiplier != 0 && !(o.Multiplier >= 1) {
		bad("multiplier %v is below 1", o.Multiplier)
	}
	if r := o.RandomizationFactor; r != NoJitter && !(r >= 0 && r < 1) {
		bad("randomization factor %v is outside [0, 1)", r)
	}
	if len(errs) == 0 {
		if d := o.withDefaults(); d.MaxInterval < d.InitialInterval {
			bad("max interval %v is below initial interval %v", d.MaxInterval, d.InitialInterval)
		}
	}
	return errors.Join(errs...)
}

// ErrExhausted is wrapped, with the last error, by Retry when it ran out of
// tries.
var ErrExhausted = errors.New("uplink: retries exhausted")

// RetryableError marks an error worth retrying, optionally after a wait the
// sink asked for (HTTP 429 or 503 with Retry-After). Plain errors are
// retryable too; this type is for carrying After.
type RetryableError struct {
	Err   error
	After time.Duration // wait at least this long; 0: use the backoff
}

// Retryable returns err marked retryable after the given wait, or nil if err is nil.
func Retryable(err error, after time.Duration) error {
	if err == nil {
		return nil
	}
	return &RetryableError{Err: err, After: after}
}

func (e *RetryableError) Error() string {
	if e.After > 0 {
		return fmt.Sprintf("%v (retry after %v)", e.Err, e.After)
	}
	return e.Err.Error()
}

func (e *RetryableError) Unwrap() error { return e.Err }

// RetryAfter returns the wait asked for by a RetryableError in err's chain, if
// it asks for one.
func RetryAfter(err error) (time.Duration, bool) {
	var re *RetryableError
	if errors.As(err, &re) && re.After > 0 {
		return re.After, true
	}
	return 0, false
}

// permanentError marks an error that retrying cannot fix, such as a record
// the sink rejects.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying; it returns nil if err is nil.
// The result unwraps to err.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err's chain holds an error marked by Permanent
// (or by backoff.Permanent).
func IsPermanent(err error) bool {
	var pe *permanentError
	var be *backoff.PermanentError
	return errors.As(err, &pe) || errors.As(err, &be)
}

// Retry calls op until it returns nil, returns a Permanent error, has been
// called o.MaxTries times, or ctx is done; it waits as a Backoff says between
// calls, or as long as a RetryableError asks (at most MaxInterval; such a
// wait does not move the backoff on). notify, if
// not nil, sees each error that will be retried and the wait before the next
// call.
//
// It returns nil; the Permanent error as op returned it; an error wrapping
// ErrExhausted and op's last error; or, when ctx ended it, an error wrapping
// the context's cause and op's last error. op is not called if ctx is already
// done.
func Retry(ctx context.Context, o RetryOptions, op func() error, notify func(err error, wait time.Duration)) error {
	if err := o.Validate(); err != nil {
		return err
	}
	o = o.withDefaults()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	b := &retryBackOff{Backoff: newBackoff(o)}
	tries := 0
	opts := []backoff.RetryOption{
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(0), // MaxTries and ctx bound it
	}
	if o.MaxTries > 0 {
		opts = append(opts, backoff.WithMaxTries(uint(o.MaxTries)))
	}
	if notify != nil {
		opts = append(opts, backoff.WithNotify(backoff.Notify(notify)))
	}
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		tries++
		err := op()
		b.last = err
		if err != nil && IsPermanent(err) {
			return struct{}{}, backoff.Permanent(err) // unwrapped again by Retry
		}
		return struct{}{}, err
	}, opts...)
	switch {
	case err == nil || IsPermanent(err):
		return err
	case o.MaxTries > 0 && tries >= o.MaxTries:
		return fmt.Errorf("%w after %d tries: %w", ErrExhausted, tries, err)
	default: // ctx is done: err is its cause
		return fmt.Errorf("%w (after %d tries, last error: %w)", err, tries, b.last)
	}
}

// retryBackOff is the backoff.BackOff that Retry hands to the backoff package:
// a Backoff that honours the RetryableError.After of the last error.
type retryBackOff struct {
	*Backoff
	last error // op's last error
}

func (b *retryBackOff) NextBackOff() time.Duration {
	if d, ok := RetryAfter(b.last); ok {
		return min(d, b.max)
	}
	return b.Next()
}

// Backoff yields the delays between attempts for a sync loop that runs its
// own attempts: exponential from InitialInterval by Multiplier, capped at
// MaxInterval, each spread by ±RandomizationFactor (and capped again). It is
// deterministic with NoJitter. It is not safe for concurrent use.
type Backoff struct {
	exp backoff.ExponentialBackOff
	max time.Duration
}

// NewBackoff returns a Backoff at its first delay. MaxTries is ignored. It
// panics if o is not valid; check user input with Validate first.
func NewBackoff(o RetryOptions) *Backoff {
	if err := o.Validate(); err != nil {
		panic(err)
	}
	return newBackoff(o.withDefaults())
}

// newBackoff is NewBackoff for options with their defaults filled in, which
// must not be filled in again: a RandomizationFactor of NoJitter is 0 by now.
func newBackoff(o RetryOptions) *Backoff {
	b := &Backoff{max: o.MaxInterval}
	b.exp = backoff.ExponentialBackOff{
		InitialInterval:     o.InitialInterval,
		RandomizationFactor: o.RandomizationFactor,
		Multiplier:          o.Multiplier,
		MaxInterval:         o.MaxInterval,
	}
	b.exp.Reset()
	return b
}

// Next returns the delay before the next attempt and moves on.
func (b *Backoff) Next() time.Duration {
	return min(b.exp.NextBackOff(), b.max)
}

// Reset goes back to the first delay, as after a success.
func (b *Backoff) Reset() { b.exp.Reset() }
