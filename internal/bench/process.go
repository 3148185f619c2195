package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	readyTimeout = 60 * time.Second // from exec to the "node ready" line
	stopTimeout  = 30 * time.Second // from SIGTERM to exit, then SIGKILL
	tailLines    = 40               // node log lines kept for error messages
)

// nodeProcess is a holdfast node the bench started and will stop.
type nodeProcess struct {
	cmd      *exec.Cmd
	dataDir  string
	keepData bool
	httpAddr string
	mqttAddr string // "" if the node has no MQTT listener
	tail     *lineTail

	exited  chan struct{} // closed once the process has exited and its stderr is drained
	waitErr error         // the process's exit status; set before exited is closed
}

// startNode runs `binary run` with a fresh data directory and listeners on
// 127.0.0.1 port 0, and returns once the node has logged that it is ready.
func startNode(ctx context.Context, binary string, extra []string, keepData bool) (*nodeProcess, error) {
	dir, err := os.MkdirTemp("", "holdfast-bench-")
	if err != nil {
		return nil, fmt.Errorf("create node data dir: %w", err)
	}
	args := append([]string{"run", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(binary, args...)
	cmd.SysProcAttr = nodeSysProcAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start node: %w", err)
	}
	p := &nodeProcess{cmd: cmd, dataDir: dir, keepData: keepData, tail: &lineTail{max: tailLines}, exited: make(chan struct{})}

	type addrs struct{ http, mqtt string }
	ready := make(chan addrs, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			p.tail.add(line)
			if !found {
				if h, m, ok := parseReady(line); ok {
					found = true
					ready <- addrs{h, m}
				}
			}
		}
		// Wait closes the pipe, so it comes after the last read.
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	var fail error
	select {
	case a := <-ready:
		p.httpAddr, p.mqttAddr = a.http, a.mqtt
		if p.httpAddr == "" {
			fail = errors.New("the node reported no HTTP address")
		}
	case <-p.exited:
		fail = fmt.Errorf("the node exited before it was ready (%v):\n%s", p.waitErr, p.tail)
	case <-timer.C:
		fail = fmt.Errorf("the node was not ready after %v:\n%s", readyTimeout, p.tail)
	case <-ctx.Done():
		fail = context.Cause(ctx)
	}
	if fail != nil {
		return nil, errors.Join(fail, p.stop())
	}
	return p, nil
}

func (p *nodeProcess) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM, waits for the node to exit (SIGKILL after stopTimeout),
// and removes the data directory unless it is to be kept. A node that does not
// exit cleanly is an error.
func (p *nodeProcess) stop() error {
	var errs []error
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.exited
			errs = append(errs, fmt.Errorf("the node did not stop within %v of SIGTERM and was killed", stopTimeout))
		}
	}
	if p.waitErr != nil && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("the node did not stop cleanly (%v):\n%s", p.waitErr, p.tail))
	}
	if !p.keepData {
		if err := os.RemoveAll(p.dataDir); err != nil {
			errs = append(errs, fmt.Errorf("remove node data dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// peakRSS returns the node's resident memory high-water mark as the kernel
// counts it (VmHWM), or 0 where that cannot be read.
func (p *nodeProcess) peakRSS() uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid()) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// parseReady recognises the node's "node ready" log line, in slog's text or
// JSON form, and returns the addresses it names.
func parseReady(line string) (httpAddr, mqttAddr string, ok bool) {
	if strings.HasPrefix(line, "{") {
		var m struct {
			Msg  string `json:"msg"`
			HTTP string `json:"http_addr"`
			MQTT string `json:"mqtt_addr"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || m.Msg != "node ready" {
			return "", "", false
		}
		return m.HTTP, m.MQTT, true
	}
	fields := parseLogfmt(line)
	if fields["msg"] != "node ready" {
		return "", "", false
	}
	return fields["http_addr"], fields["mqtt_addr"], true
}

// parseLogfmt splits a slog text line into its key=value pairs; quoted values
// are unquoted. Malformed pairs are skipped.
func parseLogfmt(line string) map[string]string {
	m := map[string]string{}
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexByte(s, ' ')
		if eq < 0 || (sp >= 0 && sp < eq) {
			if sp < 0 {
				break
			}
			s = s[sp:]
			continue
		}
		key, rest := s[:eq], s[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
		}
		m[key] = val
		s = rest
	}
	return m
}

// lineTail keeps the last max lines written to it. It is safe for concurrent use.
type lineTail struct {
	max   int
	mu    sync.Mutex
	lines []string // guarded by mu
}

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == t.max {
		t.lines = append(t.lines[:0], t.lines[1:]...)
	}
	t.lines = append(t.lines, line)
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b bytes.Buffer
	for _, l := range t.lines {
		b.WriteString("  | ")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return strings.TrimSuffix(b.String(), "\n")
}
