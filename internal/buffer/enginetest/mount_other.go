//go:build !linux

package enginetest

import "errors"

func mountTmpfs(dir, size string) error {
	return errors.New("tmpfs mounts are only implemented on Linux")
}

func unmount(dir string) error { return nil }
