package main

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRecoverMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	limit := func() int64 { return debug.SetMemoryLimit(-1) }

	t.Setenv("GOMEMLIMIT", "")
	require.NoError(t, setRecoverMemoryLimit(defaultRecoverMemoryLimit, false))
	require.Equal(t, int64(192<<20), limit(), "the default without GOMEMLIMIT")
	require.NoError(t, setRecoverMemoryLimit("300MiB", true))
	require.Equal(t, int64(300<<20), limit())
	require.NoError(t, setRecoverMemoryLimit("0", true))
	require.Equal(t, int64(math.MaxInt64), limit(), "0: none")

	t.Setenv("GOMEMLIMIT", "100MiB")
	debug.SetMemoryLimit(100 << 20) // as the runtime did at start
	require.NoError(t, setRecoverMemoryLimit(defaultRecoverMemoryLimit, false))
	require.Equal(t, int64(100<<20), limit(), "GOMEMLIMIT wins over the default")
	require.NoError(t, setRecoverMemoryLimit("250MiB", true))
	require.Equal(t, int64(250<<20), limit(), "the flag given wins over GOMEMLIMIT")

	for _, bad := range []string{"lots", "1MiB", "-5MiB"} {
		require.Error(t, setRecoverMemoryLimit(bad, true), bad)
	}
}
