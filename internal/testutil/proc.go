package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// Proc is a process of the holdfast binary an end-to-end test starts,
// kills with SIGKILL and starts again, keeping everything it wrote to
// stderr, each start marked, for the test's failure messages.
type Proc struct {
	Binary string
	Args   []string
	Env    []string // added to the test's environment

	cmd      *exec.Cmd
	done     chan struct{}
	mu       sync.Mutex
	log      strings.Builder
	restarts int
}

// Start runs the process once more. The first start of a Proc registers a
// kill at the end of t, so a restart inside a subtest outlives the subtest.
func (p *Proc) Start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command(p.Binary, p.Args...)
	p.cmd.Env = append(os.Environ(), p.Env...)
	p.done = make(chan struct{})
	p.mu.Lock()
	fmt.Fprintf(&p.log, "=== start %d\n", p.restarts)
	p.mu.Unlock()
	p.restarts++
	stderr, err := p.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, p.cmd.Start())
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stderr)
	}()
	done, cmd := p.done, p.cmd
	go func() { <-read; cmd.Wait(); close(done) }()
	if p.restarts == 1 {
		t.Cleanup(p.Kill)
	}
}

// Running says whether the process started last is still running.
func (p *Proc) Running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Logs is everything the process wrote to stderr, over all its starts.
func (p *Proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}
