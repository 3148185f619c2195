package node

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupMemoryLimit is the lowest memory limit of this process's cgroup and
// its ancestors, read under root (/sys/fs/cgroup) for the cgroup paths in
// self (/proc/self/cgroup): memory.max on cgroup v2 (the unified hierarchy,
// line "0::/path"), memory.limit_in_bytes on v1 (the memory controller's
// line, its hierarchy mounted at root/memory). The process's cgroup is
// rarely root's own: a systemd unit's MemoryMax= is in
// /sys/fs/cgroup/system.slice/<unit>/memory.max; only a container with its
// own cgroup namespace sees its limit at /sys/fs/cgroup/memory.max. A
// directory that is not there (a path from outside a container's
// namespace) is skipped. 0 if no limit is found.
func cgroupMemoryLimit(root string, self []byte) uint64 {
	var limit uint64
	take := func(file string) {
		b, err := os.ReadFile(file)
		if err != nil {
			return
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64) // "max": no limit
		if err == nil && v > 0 && (limit == 0 || v < limit) {
			limit = v
		}
	}
	walk := func(base, path, file string) {
		for p := filepath.Clean("/" + path); ; p = filepath.Dir(p) {
			take(filepath.Join(base, p, file))
			if p == "/" {
				return
			}
		}
	}
	for _, line := range strings.Split(string(self), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case id == "0" && controllers == "":
			walk(root, path, "memory.max")
		case hasController(controllers, "memory"):
			walk(filepath.Join(root, "memory"), path, "memory.limit_in_bytes")
		}
	}
	return limit
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}
