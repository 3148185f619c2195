package uplink

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// refusingSink answers every Send with err, counting the calls.
type refusingSink struct {
	err   error
	sends atomic.Int64
}

func (s *refusingSink) Name() string                                                     { return "refuser" }
func (s *refusingSink) Resume(context.Context, map[Lane]uint64, map[string]uint64) error { return nil }
func (s *refusingSink) Positions() map[string]uint64                                     { return nil }
func (s *refusingSink) Close() error                                                     { return nil }
func (s *refusingSink) Send(context.Context, []Record) error {
	s.sends.Add(1)
	return s.err
}

// A day-long Retry-After is capped at MaxInterval, and a sink that refuses
// records for good keeps them: they are retried, never skipped.
func TestRetryAfterCappedAndPermanentHeld(t *testing.T) {
	for name, sinkErr := range map[string]error{
		"retry-after a day": Retryable(errors.New("busy"), 24*time.Hour),
		"permanent":         Permanent(errors.New("400 bad request")),
	} {
		t.Run(name, func(t *testing.T) {
			l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
			require.NoError(t, err)
			defer l.Close()
			appendEvents(t, l, 0, 10)
			sink := &refusingSink{err: sinkErr}
			s := NewSyncer(l, sink, SyncOptions{Retry: RetryOptions{InitialInterval: 5 * time.Millisecond, MaxInterval: 30 * time.Millisecond}})
			s.Start()
			deadline := time.Now().Add(10 * time.Second)
			for sink.sends.Load() < 3 {
				require.True(t, time.Now().Before(deadline), "the sink was not retried")
				time.Sleep(5 * time.Millisecond)
			}
			require.NoError(t, s.Close())
			st := s.Status()
			require.Equal(t, uint64(0), st.SyncedOffset, "nothing is skipped")
			require.Equal(t, uint64(10), st.LagRecords)
			require.NotEmpty(t, st.LastError)
		})
	}
}

// recordingSink confirms everything and remembers batch sizes.
type recordingSink struct {
	mu      sync.Mutex
	batches []int
}

func (s *recordingSink) Name() string                                                     { return "recorder" }
func (s *recordingSink) Resume(context.Context, map[Lane]uint64, map[string]uint64) error { return nil }
func (s *recordingSink) Positions() map[string]uint64                                     { return nil }
func (s *recordingSink) Close() error                                                     { return nil }
func (s *recordingSink) Send(_ context.Context, recs []Record) error {
	s.mu.Lock()
	s.batches = append(s.batches, len(recs))
	s.mu.Unlock()
	return nil
}

// A backlog drains in bigger batches; once caught up, batches are back to the
// configured size.
func TestBatchesGrowWithTheBacklog(t *testing.T) {
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	appendEvents(t, l, 0, 5000) // a backlog of 50 batches
	sink := &recordingSink{}
	s := NewSyncer(l, sink, SyncOptions{BatchRecords: 100, MaxDelay: time.Millisecond})
	s.Start()
	defer s.Close()
	eventually(t, "the backlog to drain", func() bool { return s.Status().SyncedOffset == 5000 })
	sink.mu.Lock()
	first := sink.batches[0]
	sink.mu.Unlock()
	require.Equal(t, 100*maxBacklogFactor, first, "the first batch of a big backlog is the largest allowed")

	appendEvents(t, l, 5000, 150)
	eventually(t, "the new records", func() bool { return s.Status().SyncedOffset == 5150 })
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for _, n := range sink.batches[len(sink.batches)-2:] {
		require.LessOrEqual(t, n, 100, "caught up: back to the configured size")
	}
}
