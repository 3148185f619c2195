package pebblelog

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/enginetest"
)

func opener(t testing.TB, dir string, maxBytes int64) buffer.Engine {
	l, err := Open(buffer.Options{Dir: dir, MaxBytes: maxBytes})
	require.NoError(t, err)
	return l
}

// TestContract runs the shared buffer.Engine contract suite, crash (SIGKILL)
// and ENOSPC subtests included.
func TestContract(t *testing.T) { enginetest.Run(t, opener) }
