package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWitnessSecretAndExposure(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := witnessFlags{name: "witness", listen: "0.0.0.0:7420", peers: []string{"10.0.0.1:7420", "10.0.0.2:7420"}, dataDir: dir}

	t.Setenv(secretEnv, "")
	o, err := w.options()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkWitnessExposure(o, false); err == nil || !strings.Contains(err.Error(), "--secret-file") {
		t.Fatalf("open listener without a secret: %v", err)
	}
	if warn, err := checkWitnessExposure(o, true); err != nil || !warn {
		t.Fatalf("--insecure: %v %v", warn, err)
	}

	t.Setenv(secretEnv, "from-env")
	if o, err = w.options(); err != nil || o.Secret != "from-env" {
		t.Fatalf("secret from the environment: %q %v", o.Secret, err)
	}
	w.secretFile = file
	if o, err = w.options(); err != nil || o.Secret != "s3cret" {
		t.Fatalf("secret from the file: %q %v", o.Secret, err)
	}
	if warn, err := checkWitnessExposure(o, false); err != nil || warn {
		t.Fatalf("with a secret: %v %v", warn, err)
	}

	w.tlsCert = file
	if _, err := w.options(); err == nil {
		t.Fatal("TLS with a certificate only")
	}
	w = witnessFlags{listen: "127.0.0.1:7420", dataDir: dir}
	if _, err := w.options(); err == nil {
		t.Fatal("no peers")
	}
}
