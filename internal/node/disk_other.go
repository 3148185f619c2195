//go:build !linux

package node

// diskFree is not measured off Linux: the buffer's capacity is max_bytes.
func diskFree(string) (int64, bool) { return 0, false }
