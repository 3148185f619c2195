package uplink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBreakerDefaults(t *testing.T) {
	b := NewBreaker("cloud", BreakerOptions{})
	assert.Equal(t, uint32(5), b.opts.Failures)
	assert.Equal(t, 30*time.Second, b.opts.OpenTimeout)
	assert.Equal(t, "cloud", b.Name())
	assert.Equal(t, BreakerClosed, b.State())
}

// TestBreakerClassify says which errors count as failures: with Failures=1,
// one failure opens the breaker.
func TestBreakerClassify(t *testing.T) {
	base := errors.New("sink down")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, BreakerClosed},
		{"plain error", base, BreakerOpen},
		{"retryable", Retryable(base, time.Second), BreakerOpen},
		{"exhausted retries", fmt.Errorf("%w: %w", ErrExhausted, base), BreakerOpen},
		{"deadline exceeded", context.DeadlineExceeded, BreakerOpen},
		{"permanent", Permanent(base), BreakerClosed},
		{"wrapped permanent", fmt.Errorf("batch 7: %w", Permanent(base)), BreakerClosed},
		{"context canceled", context.Canceled, BreakerClosed},
		{"wrapped context canceled", fmt.Errorf("send: %w", context.Canceled), BreakerClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBreaker("cloud", BreakerOptions{Failures: 1, OpenTimeout: time.Hour})
			err := b.Do(func() error { return tc.err })
			assert.Equal(t, tc.err, err, "Do must return the op's error unchanged")
			assert.Equal(t, tc.want, b.State())
		})
	}
}

func TestBreakerOpenError(t *testing.T) {
	b := NewBreaker("cloud", BreakerOptions{Failures: 2, OpenTimeout: time.Hour})
	for range 2 {
		require.Error(t, b.Do(func() error { return errors.New("down") }))
	}
	called := false
	err := b.Do(func() error { called = true; return nil })
	assert.False(t, called)
	assert.ErrorIs(t, err, ErrOpen)
	assert.ErrorIs(t, err, gobreaker.ErrOpenState)
	assert.Contains(t, err.Error(), "cloud")
}

// TestBreakerOneProbe holds the half-open probe in flight and checks that a
// second call fails fast meanwhile.
func TestBreakerOneProbe(t *testing.T) {
	b := NewBreaker("cloud", BreakerOptions{Failures: 1, OpenTimeout: time.Millisecond})
	require.Error(t, b.Do(func() error { return errors.New("down") }))
	eventually(t, "half-open", func() bool { return b.State() == BreakerHalfOpen })

	started, release := make(chan struct{}), make(chan struct{})
	probe := make(chan error)
	go func() {
		probe <- b.Do(func() error {
			close(started)
			<-release
			return nil
		})
	}()
	<-started
	called := false
	err := b.Do(func() error { called = true; return nil })
	assert.False(t, called)
	assert.ErrorIs(t, err, ErrOpen)
	assert.ErrorIs(t, err, gobreaker.ErrTooManyRequests)
	assert.Equal(t, BreakerHalfOpen, b.State())

	close(release)
	require.NoError(t, <-probe)
	assert.Equal(t, BreakerClosed, b.State())
}

func TestBreakerPanicCountsAsFailure(t *testing.T) {
	var changes []string
	b := NewBreaker("cloud", BreakerOptions{
		Failures:    1,
		OpenTimeout: time.Hour,
		OnChange:    func(from, to string) { changes = append(changes, from+">"+to) },
	})
	assert.PanicsWithValue(t, "boom", func() { _ = b.Do(func() error { panic("boom") }) })
	assert.Equal(t, BreakerOpen, b.State())
	assert.Equal(t, []string{"closed>open"}, changes)
}

func TestBreakerStatesMatchGobreaker(t *testing.T) {
	for _, s := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateOpen, gobreaker.StateHalfOpen} {
		assert.Contains(t, BreakerStates, s.String())
		assert.False(t, strings.HasPrefix(s.String(), "unknown"))
	}
}
