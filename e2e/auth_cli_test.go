package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// holdfast runs the binary with args in dir and returns its stdout and
// stderr, failing the test if it fails.
func holdfastIn(t *testing.T, dir string, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("holdfast %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}

var (
	deviceTokenRE = regexp.MustCompile(`^hfd_[a-z2-7]{16}_[a-z2-7]{52}\n$`)
	apiTokenRE    = regexp.MustCompile(`^hft_[a-z2-7]{16}_[a-z2-7]{52}\n$`)
)

// checkSecretFile requires path to be 0600 and not to hold token.
func checkSecretFile(t *testing.T, path, token string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %04o, want 0600", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	secret := token[len(token)-52:]
	if strings.Contains(string(data), secret) {
		t.Fatalf("%s holds the token's secret:\n%s", path, data)
	}
	if !strings.Contains(string(data), "$argon2id$v=19$") {
		t.Fatalf("%s has no argon2id hash:\n%s", path, data)
	}
}

func TestDeviceCLI(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "site", "devices.yaml")
	if err := os.Mkdir(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	out, _ := holdfastIn(t, dir, "device", "add", "fridge-7", "--devices", file, "--streams", "temperature,door")
	if !deviceTokenRE.MatchString(out) {
		t.Fatalf("device add printed %q, want exactly one line: the token", out)
	}
	token := strings.TrimSpace(out)
	checkSecretFile(t, file, token)

	// Without --devices: devices.yaml in the current directory.
	out, _ = holdfastIn(t, dir, "device", "add", "fridge-8")
	if !deviceTokenRE.MatchString(out) {
		t.Fatalf("device add printed %q", out)
	}
	checkSecretFile(t, filepath.Join(dir, "devices.yaml"), strings.TrimSpace(out))

	list, _ := holdfastIn(t, dir, "device", "list", "--devices", file)
	lines := strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "fridge-7 ") || !strings.Contains(lines[1], "temperature,door") ||
		!strings.HasSuffix(lines[1], " -") || strings.Contains(list, "argon2") || strings.Contains(list, token[4:]) {
		t.Fatalf("device list:\n%s", list)
	}

	holdfastIn(t, dir, "device", "revoke", "fridge-7", "--devices", file)
	list, _ = holdfastIn(t, dir, "device", "list", "--devices", file)
	lines = strings.Split(strings.TrimSpace(list), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^fridge-7 .* \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(lines[1]) || strings.HasSuffix(lines[1], " -") {
		t.Fatalf("device list after revoke shows no revocation time:\n%s", list)
	}
	checkSecretFile(t, file, token)

	// Errors go to stderr with a non-zero exit and nothing on stdout.
	for _, args := range [][]string{
		{"device", "revoke", "fridge-7", "--devices", file},      // not active any more
		{"device", "add", "bad/id", "--devices", file},           // not a device id
		{"device", "add", "fridge-8"},                            // active
		{"device", "list", "--devices", filepath.Join(dir, "x")}, // missing
	} {
		cmd := exec.Command(binary, args...)
		cmd.Dir = dir
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		if err := cmd.Run(); err == nil || stdout.Len() != 0 {
			t.Fatalf("holdfast %s: err %v, stdout %q; want a failure and no stdout", strings.Join(args, " "), err, stdout.String())
		}
	}

	// A file others can read is refused, naming the fix.
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "device", "list", "--devices", file)
	msg, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "chmod 600 "+file) {
		t.Fatalf("device list of a 0644 file: err %v, output %s", err, msg)
	}
}

func TestTokenCLI(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens.yaml")
	out, _ := holdfastIn(t, dir, "token", "add", "grafana", "--role", "read", "--tokens", file)
	if !apiTokenRE.MatchString(out) {
		t.Fatalf("token add printed %q, want exactly one line: the token", out)
	}
	token := strings.TrimSpace(out)
	checkSecretFile(t, file, token)
	out, _ = holdfastIn(t, dir, "token", "add", "ops", "--role", "admin")
	if !apiTokenRE.MatchString(out) {
		t.Fatalf("token add printed %q", out)
	}
	checkSecretFile(t, filepath.Join(dir, "tokens.yaml"), strings.TrimSpace(out))

	list, _ := holdfastIn(t, dir, "token", "list")
	if !regexp.MustCompile(`(?m)^grafana +read +[a-z2-7]{16} +\S+ +-$`).MatchString(list) ||
		!regexp.MustCompile(`(?m)^ops +admin +`).MatchString(list) || strings.Contains(list, "argon2") {
		t.Fatalf("token list:\n%s", list)
	}
	holdfastIn(t, dir, "token", "revoke", "grafana")
	list, _ = holdfastIn(t, dir, "token", "list")
	if regexp.MustCompile(`(?m)^grafana .* -$`).MatchString(list) {
		t.Fatalf("token list after revoke:\n%s", list)
	}
	for _, args := range [][]string{
		{"token", "add", "x"},                     // no role
		{"token", "add", "x", "--role", "root"},   // bad role
		{"token", "add", "ops", "--role", "read"}, // active
	} {
		cmd := exec.Command(binary, args...)
		cmd.Dir = dir
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		if err := cmd.Run(); err == nil || stdout.Len() != 0 {
			t.Fatalf("holdfast %s: err %v, stdout %q", strings.Join(args, " "), err, stdout.String())
		}
	}
}
