package uplink

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fast are options whose real waits are short: 1 ms doubling to 16 ms.
var fast = RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 16 * time.Millisecond}

// failing returns an op that fails its first n calls, then succeeds, and a
// pointer to its call count.
func failing(n int, err error) (func() error, *int) {
	calls := 0
	return func() error {
		calls++
		if calls <= n {
			return err
		}
		return nil
	}, &calls
}

// waits records what notify saw.
type waits struct {
	errs []error
	d    []time.Duration
}

func (w *waits) notify(err error, d time.Duration) {
	w.errs = append(w.errs, err)
	w.d = append(w.d, d)
}

func TestRetrySucceedsAfterFailures(t *testing.T) {
	base := errors.New("down")
	op, calls := failing(4, base)
	var w waits
	require.NoError(t, Retry(context.Background(), fast, op, w.notify))
	assert.Equal(t, 5, *calls)
	assert.Len(t, w.d, 4)
	for _, err := range w.errs {
		assert.Equal(t, base, err)
	}
}

func TestRetryPermanentStopsAtOnce(t *testing.T) {
	base := errors.New("bad record")
	op, calls := failing(100, fmt.Errorf("batch 3: %w", Permanent(base)))
	var w waits
	err := Retry(context.Background(), fast, op, w.notify)
	assert.Equal(t, 1, *calls)
	assert.Empty(t, w.d)
	assert.True(t, IsPermanent(err), "the result must still say permanent: %v", err)
	assert.ErrorIs(t, err, base)
	assert.NotErrorIs(t, err, ErrExhausted)
	assert.Equal(t, "batch 3: bad record", err.Error())
}

func TestRetryMaxTries(t *testing.T) {
	base := errors.New("down")
	for _, tc := range []struct {
		maxTries, calls int
	}{
		{0, 10}, // the default
		{1, 1},
		{4, 4},
	} {
		t.Run(fmt.Sprint(tc.maxTries), func(t *testing.T) {
			o := RetryOptions{InitialInterval: time.Microsecond, MaxInterval: time.Microsecond, MaxTries: tc.maxTries}
			op, calls := failing(100, base)
			var w waits
			err := Retry(context.Background(), o, op, w.notify)
			assert.Equal(t, tc.calls, *calls)
			assert.Len(t, w.d, tc.calls-1)
			assert.ErrorIs(t, err, ErrExhausted)
			assert.ErrorIs(t, err, base)
			assert.Contains(t, err.Error(), fmt.Sprintf("after %d tries", tc.calls))
		})
	}
	t.Run("no limit", func(t *testing.T) {
		o := RetryOptions{InitialInterval: time.Microsecond, MaxInterval: time.Microsecond, MaxTries: -1}
		op, calls := failing(25, base)
		require.NoError(t, Retry(context.Background(), o, op, nil))
		assert.Equal(t, 26, *calls)
	})
}

// TestRetryAfter checks that a RetryableError's After replaces the backoff
// for that wait, capped at MaxInterval, and leaves the backoff sequence where
// it was.
func TestRetryAfter(t *testing.T) {
	base := errors.New("429")
	errs := []error{
		Retryable(base, 3*time.Millisecond),
		base,
		Retryable(base, time.Hour), // capped
		base,
		Retryable(base, 0), // no wait asked for: the backoff
		nil,
	}
	calls := 0
	op := func() error { calls++; return errs[calls-1] }
	var w waits
	o := RetryOptions{
		InitialInterval:     time.Millisecond,
		MaxInterval:         5 * time.Millisecond,
		RandomizationFactor: NoJitter,
	}
	// A wait above the cap would be an hour: fail and stop at once instead.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	notify := func(err error, d time.Duration) {
		w.notify(err, d)
		if d > o.MaxInterval {
			cancel()
		}
	}
	require.NoError(t, Retry(ctx, o, op, notify))
	assert.Equal(t, []time.Duration{
		3 * time.Millisecond,
		1 * time.Millisecond,
		5 * time.Millisecond,
		2 * time.Millisecond,
		4 * time.Millisecond,
	}, w.d)
	assert.Equal(t, errs[:5], w.errs)
}

func TestRetryContext(t *testing.T) {
	base := errors.New("down")
	slow := RetryOptions{InitialInterval: time.Hour} // would wait an hour

	t.Run("cancelled while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		op, calls := failing(100, base)
		err := Retry(ctx, slow, op, func(error, time.Duration) { cancel() })
		assert.Equal(t, 1, *calls)
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, base)
		assert.NotErrorIs(t, err, ErrExhausted)
	})
	t.Run("cancelled from outside", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		op, _ := failing(100, base)
		waiting := make(chan struct{})
		done := make(chan error)
		go func() { done <- Retry(ctx, slow, op, func(error, time.Duration) { close(waiting) }) }()
		<-waiting
		cancel()
		assert.ErrorIs(t, <-done, context.Canceled)
	})
	t.Run("cancelled during the op", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(context.Background())
		stop := errors.New("shutting down")
		calls := 0
		var w waits
		err := Retry(ctx, slow, func() error { calls++; cancel(stop); return base }, w.notify)
		assert.Equal(t, 1, calls)
		assert.Empty(t, w.d)
		assert.ErrorIs(t, err, stop)
		assert.ErrorIs(t, err, base)
	})
	t.Run("done before the first try", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		op, calls := failing(0, nil)
		assert.ErrorIs(t, Retry(ctx, slow, op, nil), context.Canceled)
		assert.Zero(t, *calls)
	})
}

// TestRetryDelays captures the planned waits of a real retry loop with the
// default jitter: each within ±10 % of a nominal delay that doubles up to
// MaxInterval, and never above it.
func TestRetryDelays(t *testing.T) {
	op, calls := failing(100, errors.New("down"))
	var w waits
	err := Retry(context.Background(), fast, op, w.notify)
	assert.ErrorIs(t, err, ErrExhausted)
	assert.Equal(t, 10, *calls)
	ms := time.Millisecond
	checkDelays(t, w.d, []time.Duration{1 * ms, 2 * ms, 4 * ms, 8 * ms, 16 * ms, 16 * ms, 16 * ms, 16 * ms, 16 * ms}, 16*ms)
}

// checkDelays asserts got[i] is within ±10 % of want[i] and at most max.
func checkDelays(t *testing.T, got, want []time.Duration, max time.Duration) {
	t.Helper()
	require.Len(t, got, len(want))
	for i, d := range got {
		lo, hi := want[i]-want[i]/10, want[i]+want[i]/10
		if d < lo || d > hi || d > max {
			t.Errorf("delay %d: %v outside [%v, %v] or above %v", i, d, lo, hi, max)
		}
	}
}

func TestBackoffDefaults(t *testing.T) {
	nominal := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000}
	for i := range nominal {
		nominal[i] *= time.Millisecond
	}
	t.Run("no jitter", func(t *testing.T) {
		b := NewBackoff(RetryOptions{RandomizationFactor: NoJitter})
		for i, want := range nominal {
			assert.Equal(t, want, b.Next(), "delay %d", i)
		}
		b.Reset()
		assert.Equal(t, 100*time.Millisecond, b.Next())
	})
	t.Run("jitter", func(t *testing.T) {
		first := map[time.Duration]bool{}
		for range 200 {
			b := NewBackoff(RetryOptions{})
			got := make([]time.Duration, len(nominal))
			for i := range got {
				got[i] = b.Next()
			}
			checkDelays(t, got, nominal, time.Minute)
			b.Reset()
			first[b.Next()] = true
		}
		assert.Greater(t, len(first), 1, "delays are not randomized")
	})
}

func TestRetryOptionsValidate(t *testing.T) {
	require.NoError(t, RetryOptions{}.Validate())
	require.NoError(t, RetryOptions{RandomizationFactor: NoJitter, MaxTries: -1}.Validate())
	require.NoError(t, RetryOptions{InitialInterval: 2 * time.Minute}.Validate(), "max defaults up to initial")
	for _, tc := range []struct {
		o    RetryOptions
		want string
	}{
		{RetryOptions{InitialInterval: -1}, "initial interval -1ns is negative"},
		{RetryOptions{MaxInterval: -1}, "max interval -1ns is negative"},
		{RetryOptions{Multiplier: 0.5}, "multiplier 0.5 is below 1"},
		{RetryOptions{RandomizationFactor: 1}, "randomization factor 1 is outside [0, 1)"},
		{RetryOptions{InitialInterval: time.Second, MaxInterval: time.Millisecond}, "max interval 1ms is below initial interval 1s"},
	} {
		err := tc.o.Validate()
		if assert.Error(t, err) {
			assert.Contains(t, err.Error(), tc.want)
		}
		called := false
		assert.Error(t, Retry(context.Background(), tc.o, func() error { called = true; return nil }, nil))
		assert.False(t, called)
		assert.Panics(t, func() { NewBackoff(tc.o) })
	}
}

func TestErrorHelpers(t *testing.T) {
	base := errors.New("x")
	assert.Nil(t, Permanent(nil))
	assert.Nil(t, Retryable(nil, time.Second))
	assert.False(t, IsPermanent(nil))
	assert.False(t, IsPermanent(base))
	assert.True(t, IsPermanent(Permanent(base)))
	assert.True(t, IsPermanent(fmt.Errorf("w: %w", Permanent(base))))
	assert.True(t, IsPermanent(backoff.Permanent(base)))
	assert.ErrorIs(t, Permanent(base), base)

	_, ok := RetryAfter(base)
	assert.False(t, ok)
	_, ok = RetryAfter(Retryable(base, 0))
	assert.False(t, ok)
	d, ok := RetryAfter(fmt.Errorf("w: %w", Retryable(base, 7*time.Second)))
	assert.True(t, ok)
	assert.Equal(t, 7*time.Second, d)
	assert.ErrorIs(t, Retryable(base, time.Second), base)
	assert.Equal(t, "x (retry after 1s)", Retryable(base, time.Second).Error())
}
