package node

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCgroupMemoryLimit: the limit is read from the process's own cgroup
// and its ancestors, not only from the hierarchy's root.
func TestCgroupMemoryLimit(t *testing.T) {
	root := t.TempDir()
	write := func(path, v string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(root, path)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, path), []byte(v+"\n"), 0o644))
	}
	// cgroup v2, a systemd unit with MemoryMax=, its slice unlimited.
	write("memory.max", "max") // not at the root on a real host; harmless
	write("system.slice/memory.max", "max")
	write("system.slice/holdfast.service/memory.max", "268435456")
	require.Equal(t, uint64(256<<20), cgroupMemoryLimit(root, []byte("0::/system.slice/holdfast.service\n")))
	// A lower limit on an ancestor wins.
	write("system.slice/memory.max", "134217728")
	require.Equal(t, uint64(128<<20), cgroupMemoryLimit(root, []byte("0::/system.slice/holdfast.service\n")))
	// A container with its own namespace: "/", the limit at the root.
	write("memory.max", "67108864")
	require.Equal(t, uint64(64<<20), cgroupMemoryLimit(root, []byte("0::/\n")))
	// No limit anywhere.
	require.Zero(t, cgroupMemoryLimit(t.TempDir(), []byte("0::/user.slice\n")))

	// cgroup v1: the memory controller's hierarchy; a path from outside the
	// namespace that is not there is skipped.
	v1 := t.TempDir()
	root = v1
	write("memory/memory.limit_in_bytes", "9223372036854771712")
	write("memory/docker/abc/memory.limit_in_bytes", "536870912")
	self := "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n"
	require.Equal(t, uint64(512<<20), cgroupMemoryLimit(v1, []byte(self)))
	require.Equal(t, uint64(9223372036854771712), cgroupMemoryLimit(v1, []byte("4:cpu,memory:/elsewhere/x\n")))
}
