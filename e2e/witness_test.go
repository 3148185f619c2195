package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// witness is a running `holdfast witness`.
type witness struct {
	cmd   *exec.Cmd
	done  chan struct{}
	ready chan struct{}
	mu    sync.Mutex
	log   strings.Builder
}

func startWitness(t *testing.T, env []string, args ...string) *witness {
	t.Helper()
	w := &witness{cmd: exec.Command(binary, append([]string{"witness"}, args...)...),
		done: make(chan struct{}), ready: make(chan struct{})}
	w.cmd.Env = append(os.Environ(), env...)
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			w.mu.Lock()
			w.log.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
			if strings.Contains(sc.Text(), `msg="witness ready"`) {
				once.Do(func() { close(w.ready) })
			}
		}
	}()
	go func() { <-read; w.cmd.Wait(); close(w.done) }()
	t.Cleanup(func() { _ = w.cmd.Process.Signal(syscall.SIGKILL); <-w.done })
	return w
}

func (w *witness) logs() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.String()
}

// TestWitnessesFormTheCluster runs three witnesses — the cluster of a pair
// has the same shape — with the secret from the environment: each reports
// ready once the bucket exists, and each stops cleanly on SIGTERM.
func TestWitnessesFormTheCluster(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addrs := freeAddrs(t, 3)
	var ws []*witness
	for i := range 3 {
		var peers []string
		for j := range 3 {
			if j != i {
				peers = append(peers, addrs[j])
			}
		}
		ws = append(ws, startWitness(t, []string{"HOLDFAST_HA_SECRET=s3cret"},
			"--name", fmt.Sprintf("w%d", i), "--ha-listen", addrs[i], "--ha-peers", strings.Join(peers, ","),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("w%d", i))))
	}
	for i, w := range ws {
		select {
		case <-w.ready:
		case <-w.done:
			t.Fatalf("w%d exited:\n%s", i, w.logs())
		case <-time.After(30 * time.Second):
			t.Fatalf("w%d not ready:\n%s", i, w.logs())
		}
	}
	for i, w := range ws {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("w%d did not stop on SIGTERM:\n%s", i, w.logs())
		}
		if code := w.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(w.logs(), "stopped cleanly") {
			t.Fatalf("w%d exited %d:\n%s", i, code, w.logs())
		}
	}
}

// TestWitnessRefusesOpenRoutes: listening beyond this host with no secret is
// refused with the fix named, and accepted with --insecure.
func TestWitnessRefusesOpenRoutes(t *testing.T) {
	args := []string{"--ha-listen", "0.0.0.0:0", "--ha-peers", "127.0.0.1:1,127.0.0.1:2", "--data-dir", t.TempDir()}
	out, err := exec.Command(binary, append([]string{"witness"}, args...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--secret-file") || !strings.Contains(string(out), "--insecure") {
		t.Fatalf("no refusal (%v):\n%s", err, out)
	}
	w := startWitness(t, nil, append(args, "--insecure")...)
	deadline := time.After(30 * time.Second)
	for !strings.Contains(w.logs(), "INSECURE") {
		select {
		case <-w.done:
			t.Fatalf("exited:\n%s", w.logs())
		case <-deadline:
			t.Fatalf("no warning:\n%s", w.logs())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// freeAddrs returns n fixed addresses for processes to listen on.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = testutil.FreeAddr(t)
	}
	return out
}
