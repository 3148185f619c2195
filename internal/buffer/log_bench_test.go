package buffer_test

import (
	"testing"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/enginetest"
)

// BenchmarkAppend: durable (fsync'd) appends to the native log; see
// enginetest.BenchAppend.
func BenchmarkAppend(b *testing.B) {
	enginetest.BenchAppend(b, func(dir string) (buffer.Engine, error) {
		return buffer.Open(buffer.Options{Dir: dir, SegmentBytes: 64 << 20, MaxBytes: 8 << 30})
	})
}

// BenchmarkRemove: what the pressure levels' removals cost; see
// enginetest.BenchRemove.
func BenchmarkRemove(b *testing.B) {
	enginetest.BenchRemove(b, func(dir string) (buffer.Engine, error) {
		return buffer.Open(buffer.Options{Dir: dir, SegmentBytes: 16 << 20, MaxBytes: 8 << 30})
	})
}
