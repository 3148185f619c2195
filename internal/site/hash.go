package site

import "github.com/cespare/xxhash/v2"

// The hashes below are part of the assignment contract: every node of a site
// must compute the same ones, or they disagree on owners.

// hashString is XXH64 with seed 0.
func hashString(s string) uint64 { return xxhash.Sum64String(s) }

// mix combines a device's and a node's hash into the pair's hash (the
// splitmix64 finalizer over dh ^ nh·φ64).
func mix(dh, nh uint64) uint64 {
	x := dh ^ (nh * 0x9e3779b97f4a7c15)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// unit maps h to a float in the open interval (0, 1): its top 53 bits plus ½,
// over 2⁵³.
func unit(h uint64) float64 {
	return (float64(h>>11) + 0.5) / (1 << 53)
}
