package process

import (
	"context"
	"math/rand/v2"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// TestProcessorFallsBackToTheFilesAndRejoinsTheTail: a processor started with
// the log many times its tail ahead reads the files, and once at the live end
// reads each new commit group from the log's tail in memory; restarted, it
// replays from the files and rejoins the tail. Its window and alert records are
// those of a processor reading only the files.
func TestProcessorFallsBackToTheFilesAndRejoinsTheTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	fs := vfs.NewMem()
	m := buffer.NewMetrics(nil)
	open := func() *buffer.Log {
		l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: fs, SegmentBytes: 64 << 10, MaxBytes: 1 << 30,
			TailBytes: testTailBytes, Metrics: m})
		require.NoError(t, err)
		return l
	}
	reads := func() (tail, file float64) {
		return promtest.ToFloat64(m.TailReadBytes), promtest.ToFloat64(m.FileReadBytes)
	}
	clock := t0
	appendBatch := func(n *node) {
		clock += 100
		_, err := n.st.Append(context.Background(), batch(rng, clock, 30))
		require.NoError(t, err)
	}

	// Behind: 200 commit groups of events (≈ 100 × the tail) before the
	// processor starts. The store read an empty log.
	n := prepareNodeOn(t, open(), fs, 2, CheckpointOptions{})
	for range 200 {
		appendBatch(n)
	}
	tail0, file0 := reads()
	require.Zero(t, file0)
	n.proc.Start()
	n.caughtUp(t)
	tail1, file1 := reads()
	require.Greater(t, file1, file0, "what is behind the tail is read from the files")

	// At the live end: each group of events, appended once the processor and
	// its writer are idle, is read from memory.
	for range 20 {
		appendBatch(n)
		n.caughtUp(t)
	}
	tail2, _ := reads()
	require.Greater(t, tail2, tail1, "the live end is read from memory")
	require.GreaterOrEqual(t, tail1, tail0)

	// Restarted: the replay reads the files, the live end memory again.
	n.close()
	n = openNodeOn(t, open(), fs, 3, CheckpointOptions{})
	for range 20 {
		appendBatch(n)
		n.caughtUp(t)
	}
	tail3, _ := reads()
	require.Greater(t, tail3, tail2)
	n.settle(t)
	require.Positive(t, n.proc.fedHits.Load(), "live events taken from the store's Fed")
	requireSameAsReference(t, n, 100)
}
