package buffer

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A failure outside a commit (a cursor write, a removal) wakes WaitDurable
// callers at once: they return the failure instead of waiting for a commit
// that will not come.
func TestFailWakesWaiters(t *testing.T) {
	c := NewCommits(10, slog.New(slog.DiscardHandler), NewMetrics(nil), "failed")
	got := make(chan error, 1)
	go func() { got <- c.WaitDurable(context.Background(), 11) }()
	time.Sleep(10 * time.Millisecond) // let it wait
	c.Fail(errors.New("disk gone"))
	select {
	case err := <-got:
		require.ErrorIs(t, err, ErrFailed)
	case <-time.After(time.Minute): // a hang guard, not a timing assertion
		t.Fatal("WaitDurable did not return after Fail")
	}
}
