package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// MainWithHoldfast is the TestMain of an end-to-end package: it builds the
// binary from pkg into *binary, runs the tests, removes the binary and
// returns the exit code (os.Exit(testutil.MainWithHoldfast(m, pkg, &binary))).
func MainWithHoldfast(m *testing.M, pkg string, binary *string) int {
	bin, dir, err := buildHoldfast(pkg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*binary = bin
	return m.Run()
}

// buildHoldfast builds the holdfast binary (CGO_ENABLED=0, as shipped) from
// the package at pkg, relative to the test's directory, into a new temporary
// directory, and returns its path and the directory to remove.
func buildHoldfast(pkg string) (binary, dir string, err error) {
	dir, err = os.MkdirTemp("", "holdfast-e2e-")
	if err != nil {
		return "", "", err
	}
	binary = filepath.Join(dir, "holdfast")
	build := exec.Command("go", "build", "-o", binary, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", "", fmt.Errorf("build holdfast: %w\n%s", err, out)
	}
	return binary, dir, nil
}
