package buffer_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/enginetest"
)

// TestContract runs the engine contract against the native log on real files.
func TestContract(t *testing.T) {
	enginetest.Run(t, func(t testing.TB, dir string, maxBytes int64) buffer.Engine {
		l, err := buffer.Open(buffer.Options{Dir: dir, MaxBytes: maxBytes, SegmentBytes: segmentBytesFor(maxBytes)})
		require.NoError(t, err)
		return l
	})
}

// segmentBytesFor is an eighth of maxBytes, between 4 KiB and 256 KiB: the
// suite's small limits then hold several segments, so retention (which deletes
// whole sealed segments) runs often and stays within a segment of the limit, and
// crash rounds roll segments under load.
func segmentBytesFor(maxBytes int64) int64 {
	return min(max(maxBytes/8, 4096), 256<<10)
}

// TestRetentionReportsUnreadRecords: see enginetest.UnreadDeleted.
func TestRetentionReportsUnreadRecords(t *testing.T) {
	enginetest.UnreadDeleted(t, buffer.Options{SegmentBytes: 4096}, func(o buffer.Options) (buffer.Engine, error) {
		return buffer.Open(o)
	})
}

// TestRetentionWaitsForRemove: see enginetest.RetentionWaitsForRemove.
func TestRetentionWaitsForRemove(t *testing.T) {
	enginetest.RetentionWaitsForRemove(t, buffer.Options{SegmentBytes: 4096}, func(o buffer.Options) (buffer.Engine, error) {
		return buffer.Open(o)
	})
}

// TestRetentionHookBeforeDeletion: see enginetest.UnreadDeletedBeforeDurable.
func TestRetentionHookBeforeDeletion(t *testing.T) {
	enginetest.UnreadDeletedBeforeDurable(t, buffer.Options{SegmentBytes: 4096}, func(o buffer.Options) (buffer.Engine, error) {
		return buffer.Open(o)
	})
}
