// Package e2e drives the real holdfast binary: it is built once in TestMain,
// started as a child process on 127.0.0.1 with ports chosen by the kernel, and
// killed with SIGKILL where a test needs a crash.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

var binary string

func TestMain(m *testing.M) {
	// The tests that call t.Parallel() spend their time waiting — on
	// timers, retries, outages, restarts — with the CPU mostly idle, and
	// run after the sequential ones (the CPU-sensitive tests, which keep
	// the machine to themselves). -parallel defaults to GOMAXPROCS, 2 on a
	// 2-core machine, where the package took 317 s at 2 and 235 s at 4
	// (375 s and 249 s with a CPU burner beside it; 530 s with every test
	// sequential). An explicit -parallel is left as given.
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "4")
	}
	os.Exit(testutil.MainWithHoldfast(m, "../cmd/holdfast", &binary))
}

// proc is a running holdfast node.
type proc struct {
	cmd      *exec.Cmd
	httpAddr string
	mqttAddr string
	done     chan struct{}
	// token, if set, is the API token the query helpers (get, allEvents)
	// send: a node with security on answers reads only to one.
	token string
	logMu sync.Mutex
	log   strings.Builder
}

var readyRE = regexp.MustCompile(`msg="node ready".* http_addr=(\S+) mqtt_addr=(\S+)`)

// start runs `holdfast run` on dataDir and waits for it to be ready.
func start(t *testing.T, dataDir string, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, dataDir, args...)
}

// startEnv is start with env (KEY=value) added to the test's environment.
func startEnv(t *testing.T, env []string, dataDir string, args ...string) *proc {
	t.Helper()
	all := append([]string{"run", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"}, args...)
	p := &proc{cmd: exec.Command(binary, all...), done: make(chan struct{})}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan [2]string, 1)
	logsRead := make(chan struct{})
	go func() {
		defer close(logsRead)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.logMu.Lock()
			p.log.WriteString(line + "\n")
			p.logMu.Unlock()
			if m := readyRE.FindStringSubmatch(line); m != nil {
				ready <- [2]string{m[1], m[2]}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	// Wait only once every log line is read: Wait closes the pipe.
	go func() { <-logsRead; p.cmd.Wait(); close(p.done) }()
	select {
	case a := <-ready:
		p.httpAddr, p.mqttAddr = a[0], a[1]
	case <-p.done:
		t.Fatalf("holdfast exited before ready:\n%s", p.logs())
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatalf("holdfast not ready after 30s:\n%s", p.logs())
	}
	t.Cleanup(p.kill)
	return p
}

func (p *proc) logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit. A node that has not
// exited 30 s later gets SIGQUIT, so that its log ends with the Go
// runtime's dump of every goroutine: where it hangs.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.kill()
		}
		t.Fatalf("holdfast did not stop on SIGTERM within 30 s; its goroutines (SIGQUIT) end the log:\n%s", p.logs())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("holdfast exited %d:\n%s", code, p.logs())
	}
}

func (p *proc) url(path string) string { return "http://" + p.httpAddr + path }

// getResp GETs u with p's API token, if it has one.
func (p *proc) getResp(u string) (*http.Response, error) {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return nil, err
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	return http.DefaultClient.Do(req)
}

// storedEvent is one element of GET /v1/events.
type storedEvent struct {
	Offset   uint64  `json:"offset"`
	ID       string  `json:"id"`
	DeviceID string  `json:"device_id"`
	Stream   string  `json:"stream"`
	Value    float64 `json:"value"`
	TS       string  `json:"ts"`
}

// allEvents pages through GET /v1/events with the given filter.
func allEvents(t *testing.T, p *proc, filter string) []storedEvent {
	t.Helper()
	var out []storedEvent
	cursor := ""
	for {
		u := p.url("/v1/events?limit=10000" + filter)
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		resp, err := p.getResp(u)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Events []storedEvent `json:"events"`
			Next   string        `json:"next"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
		}
		out = append(out, page.Events...)
		if page.Next == "" {
			return out
		}
		cursor = page.Next
	}
}

// localCloud starts a cloud on 127.0.0.1, any port, storing under dir,
// closed when the test ends.
func localCloud(t *testing.T, dir string) *cloud.Server {
	t.Helper()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(dir, "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	return srv
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
