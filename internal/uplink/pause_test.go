package uplink

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// TestPausedSyncerSendsNothingThenResumes: a paused syncer sends nothing
// and keeps its cursor while records arrive; resumed, it sends every record
// from where it stopped, each once.
func TestPausedSyncerSendsNothingThenResumes(t *testing.T) {
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	appendEvents(t, l, 0, 100)
	sink := &recordingSink{}
	s := NewSyncer(l, sink, SyncOptions{BatchRecords: 100, MaxDelay: time.Millisecond})
	s.Start()
	defer s.Close()
	eventually(t, "the first records", func() bool { return s.Status().SyncedOffset == 100 })

	s.SetPaused(true)
	require.True(t, s.Paused())
	// Status says paused once no batch is under way.
	eventually(t, "the syncer standing", func() bool { return s.Status().Paused })
	sink.mu.Lock()
	before := len(sink.batches)
	sink.mu.Unlock()
	appendEvents(t, l, 100, 250)
	time.Sleep(300 * time.Millisecond)
	sink.mu.Lock()
	require.Equal(t, before, len(sink.batches), "nothing sent while paused")
	sink.mu.Unlock()
	require.Equal(t, uint64(100), s.Status().SyncedOffset, "the cursor stays")

	s.SetPaused(false)
	eventually(t, "the rest after the resume", func() bool { return s.Status().SyncedOffset == 350 })
	require.False(t, s.Status().Paused)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	total := 0
	for _, n := range sink.batches {
		total += n
	}
	require.Equal(t, 350, total, "every record sent once")
}
