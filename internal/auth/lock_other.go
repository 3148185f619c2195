//go:build !unix

package auth

// withLock runs fn; without flock, concurrent edits of one file are not
// serialized on this platform.
func withLock(path string, fn func() error) error { return fn() }
