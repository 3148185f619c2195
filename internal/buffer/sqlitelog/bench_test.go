package sqlitelog

import (
	"testing"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/enginetest"
)

// BenchmarkAppend: durable (committed, WAL fsync'd) appends; see
// enginetest.BenchAppend.
func BenchmarkAppend(b *testing.B) {
	enginetest.BenchAppend(b, func(dir string) (buffer.Engine, error) {
		return Open(buffer.Options{Dir: dir, MaxBytes: 8 << 30})
	})
}

// BenchmarkRemove: what the pressure levels' removals cost; see
// enginetest.BenchRemove.
func BenchmarkRemove(b *testing.B) {
	enginetest.BenchRemove(b, func(dir string) (buffer.Engine, error) {
		return Open(buffer.Options{Dir: dir, MaxBytes: 8 << 30})
	})
}
