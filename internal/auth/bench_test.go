package auth

import (
	"path/filepath"
	"testing"
)

// benchSetup makes a devices file with one device hashed with the default
// parameters (m=19 MiB, t=2, p=1).
func benchSetup(b *testing.B) (*Authenticator, string) {
	devices := filepath.Join(b.TempDir(), "devices.yaml")
	tok, err := AddDevice(devices, "fridge-7", nil)
	if err != nil {
		b.Fatal(err)
	}
	a, err := New(Options{Devices: devices})
	if err != nil {
		b.Fatal(err)
	}
	return a, tok
}

// BenchmarkVerifyFirst is a token's first verification: one argon2id run with
// the default parameters (what a wrong token costs, too).
func BenchmarkVerifyFirst(b *testing.B) {
	a, tok := benchSetup(b)
	for b.Loop() {
		a.mu.Lock()
		clear(a.verified)
		a.mu.Unlock()
		if _, err := a.Device(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCached is every later verification of the same token.
func BenchmarkVerifyCached(b *testing.B) {
	a, tok := benchSetup(b)
	if _, err := a.Device(tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Device(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedParallel is the cached path from every CPU at once.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	a, tok := benchSetup(b)
	if _, err := a.Device(tok); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Device(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
