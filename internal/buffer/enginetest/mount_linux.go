package enginetest

import (
	"errors"
	"syscall"
)

// mountTmpfs mounts a tmpfs of size (as mount -o size=…) on dir.
func mountTmpfs(dir, size string) error {
	return syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size)
}

// unmount unmounts dir, lazily if something still holds it open.
func unmount(dir string) error {
	err := syscall.Unmount(dir, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	return err
}
