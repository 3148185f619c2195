package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSipHashVectors checks the keys are SipHash-2-4 sums: the reference implementation's
// vectors (key 00 01 … 0f, message 00 01 … of each length).
func TestSipHashVectors(t *testing.T) {
	k := sipKey{k0: 0x0706050403020100, k1: 0x0f0e0d0c0b0a0908}
	msg := make([]byte, 16)
	for i := range msg {
		msg[i] = byte(i)
	}
	require.Equal(t, uint64(0x726fdb47dd0e0e31), k.sum(msg[:0]))
	require.Equal(t, uint64(0x74f839c593dc67fd), k.sum(msg[:1]))
	require.Equal(t, uint64(0x93f5f5799a932462), k.sum(msg[:8]))
	require.Equal(t, uint64(0xa129ca6149be45e5), k.sum(msg[:15]))
}
