package node

import "syscall"

// diskFree returns the bytes free for an unprivileged writer on the file
// system holding dir.
func diskFree(dir string) (int64, bool) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(dir, &s); err != nil {
		return 0, false
	}
	return int64(s.Bavail) * int64(s.Bsize), true
}
