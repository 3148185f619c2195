package uplink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// downSink fails every send and remembers what the syncer told it.
type downSink struct {
	sends    atomic.Int32
	mu       sync.Mutex
	pressure []bool
}

func (s *downSink) Name() string                                                     { return "down" }
func (s *downSink) Resume(context.Context, map[Lane]uint64, map[string]uint64) error { return nil }
func (s *downSink) Positions() map[string]uint64                                     { return nil }
func (s *downSink) Close() error                                                     { return nil }
func (s *downSink) Send(context.Context, []Record) error {
	s.sends.Add(1)
	return errors.New("the cloud is away")
}
func (s *downSink) SetPressure(on bool) {
	s.mu.Lock()
	s.pressure = append(s.pressure, on)
	s.mu.Unlock()
}

// TestPressureSyncsMoreOften: a syncer waiting out a long backoff (an hour
// here) retries at once when the buffer comes under pressure, and tells a
// sink that implements Pressured.
func TestPressureSyncsMoreOften(t *testing.T) {
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	e := event.Event{DeviceID: "d", Stream: "temp", TS: 1_700_000_000_000, Value: 1}
	_, err = l.Append(e.AppendBinary(nil))
	require.NoError(t, err)
	sink := &downSink{}
	s := NewSyncer(l, sink, SyncOptions{MaxDelay: time.Millisecond,
		Retry:   RetryOptions{InitialInterval: time.Hour, MaxInterval: time.Hour, RandomizationFactor: NoJitter},
		Breaker: BreakerOptions{Failures: 1000}})
	s.Start()
	defer s.Close()
	require.Eventually(t, func() bool { return sink.sends.Load() == 1 }, 10*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, int32(1), sink.sends.Load(), "the syncer waits out its backoff")

	s.SetPressure(true)
	require.Eventually(t, func() bool { return sink.sends.Load() == 2 }, 10*time.Second, time.Millisecond,
		"pressure cuts the wait short")
	s.SetPressure(true) // no change: no second kick
	s.SetPressure(false)
	sink.mu.Lock()
	require.Equal(t, []bool{true, true, false}, sink.pressure, "the sink is told")
	sink.mu.Unlock()
}

// TestHarderCompressionUnderPressure: the JetStream sink's batches under
// pressure are zstd at the better-compression level, no larger than at the
// fastest, and decode to the same records.
func TestHarderCompressionUnderPressure(t *testing.T) {
	sink := NewJetStreamSink(JetStreamOptions{NodeID: "n1"})
	require.Equal(t, cloud.FastCompression, sink.compression())
	sink.SetPressure(true)
	require.Equal(t, cloud.HardCompression, sink.compression())
	sink.SetPressure(false)
	require.Equal(t, cloud.FastCompression, sink.compression())
	off := NewJetStreamSink(JetStreamOptions{NodeID: "n1", NoCompress: true})
	off.SetPressure(true)
	require.Equal(t, cloud.NoCompression, off.compression(), "compress: false holds under pressure")

	var b cloud.Batch
	for i := range 2000 {
		e := event.Event{DeviceID: "dev-" + string(rune('a'+i%7)), Stream: "temp", TS: int64(1_700_000_000_000 + i*1000), Value: float64(i % 50)}
		b.Append(uint64(i), e.AppendBinary(nil))
	}
	fast := cloud.BatchMsgCompressed("n1", cloud.KindEvents, "temp", "normal", &b, cloud.FastCompression)
	hard := cloud.BatchMsgCompressed("n1", cloud.KindEvents, "temp", "normal", &b, cloud.HardCompression)
	require.LessOrEqual(t, len(hard.Data), len(fast.Data))
	a, err := cloud.DecodeBatch(fast.Header, fast.Data)
	require.NoError(t, err)
	c, err := cloud.DecodeBatch(hard.Header, hard.Data)
	require.NoError(t, err)
	require.Equal(t, a, c)
	require.Len(t, c, 2000)
	t.Logf("2000 events: %d bytes fastest, %d better compression", len(fast.Data), len(hard.Data))
}

// cursorFailingLog fails CommitCursors while fail is set.
type cursorFailingLog struct {
	buffer.Engine
	fail atomic.Bool
}

func (l *cursorFailingLog) CommitCursors(c map[string]uint64) error {
	if l.fail.Load() {
		return errors.New("cursors file: no space left on device")
	}
	return l.Engine.CommitCursors(c)
}

// TestCursorsNeverAheadOfTheLog: when saving the sync cursors fails after a
// confirmed batch, the cursors the syncer holds stay with the log's (what a
// restart would resume from), and the syncer resumes; once saving works
// again, everything syncs.
func TestCursorsNeverAheadOfTheLog(t *testing.T) {
	inner, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer inner.Close()
	l := &cursorFailingLog{Engine: inner}
	for i := range 50 {
		e := event.Event{DeviceID: "d", Stream: "temp", TS: 1_700_000_000_000 + int64(i), Value: 1}
		_, err := l.Append(e.AppendBinary(nil))
		require.NoError(t, err)
	}
	sink := &recordingSink{}
	l.fail.Store(true)
	s := NewSyncer(l, sink, SyncOptions{BatchRecords: 10, MaxDelay: time.Millisecond,
		Retry: RetryOptions{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}})
	s.Start()
	defer s.Close()
	require.Eventually(t, func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.batches) >= 3
	}, 10*time.Second, time.Millisecond, "the syncer sends and resumes")
	for lane, c := range s.LaneCursors() {
		saved, _ := inner.Cursor("sync:recorder:" + lane.String())
		require.Equal(t, saved, c, "lane %v: the cursor held is the log's", lane)
	}
	l.fail.Store(false)
	require.Eventually(t, func() bool { return s.Status().SyncedOffset == l.DurableOffset() }, 10*time.Second, time.Millisecond)
}

// failedCursorsLog's cursor saves fail as those of a failed buffer do.
type failedCursorsLog struct{ buffer.Engine }

func (failedCursorsLog) CommitCursors(map[string]uint64) error {
	return fmt.Errorf("%w: disk gone", buffer.ErrFailed)
}

// TestFailedBufferStillDrains: once the buffer has failed (its cursors can
// no longer be saved, and it removes nothing), the syncer keeps sending the
// backlog, each record once, with its cursors in memory only.
func TestFailedBufferStillDrains(t *testing.T) {
	inner, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer inner.Close()
	for i := range 50 {
		e := event.Event{DeviceID: "d", Stream: "temp", TS: 1_700_000_000_000 + int64(i), Value: 1}
		_, err := inner.Append(e.AppendBinary(nil))
		require.NoError(t, err)
	}
	sink := &recordingSink{}
	s := NewSyncer(failedCursorsLog{inner}, sink, SyncOptions{BatchRecords: 10, MaxDelay: time.Millisecond})
	s.Start()
	defer s.Close()
	require.Eventually(t, func() bool { return s.Status().SyncedOffset == inner.DurableOffset() }, 10*time.Second, time.Millisecond)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	sent := 0
	for _, n := range sink.batches {
		sent += n
	}
	require.Equal(t, 50, sent, "every record sent once")
}
