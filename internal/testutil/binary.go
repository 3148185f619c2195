package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildHoldfast builds the holdfast binary (CGO_ENABLED=0, as shipped) from
// the package at pkg, relative to the test's directory, into a new temporary
// directory, and returns its path and the directory to remove. End-to-end
// test packages call it from TestMain.
func BuildHoldfast(pkg string) (binary, dir string, err error) {
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
