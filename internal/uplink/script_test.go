package uplink

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestScripts runs the scripts in testdata/*.txt; the format is described in
// testdata/README.md. Each script drives one Connectivity, one Breaker and the
// Metrics tracking both, for the sink "cloud".
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scripts in testdata")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

const scriptSink = "cloud"

type scriptRun struct {
	t     *testing.T
	where string // file:line of the command being run

	clock *fakeClock
	conn  *Connectivity
	br    *Breaker
	reg   *prometheus.Registry

	mu      sync.Mutex
	changes []string // "from>to" from both machines, in order; guarded by mu
}

func (r *scriptRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s: "+format, append([]any{r.where}, args...)...)
}

func (r *scriptRun) record(from, to string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, from+">"+to)
}

func runScript(t *testing.T, file string) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &scriptRun{t: t}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r.where = fmt.Sprintf("%s:%d: %s", file, n, line)
		cmd, args, _ := strings.Cut(line, " ")
		if cmd != "init" && r.conn == nil {
			r.fatalf("script must start with init")
		}
		switch cmd {
		case "init":
			r.init(strings.Fields(args))
		case "fail":
			r.conn.SyncFailed(errors.New(args))
		case "ok":
			r.conn.SyncSucceeded()
		case "restored":
			r.conn.Restored()
		case "advance":
			r.clock.Advance(r.duration(args))
		case "breaker-do", "sync":
			r.do(cmd == "sync", args)
		case "wait":
			want, ok := strings.CutPrefix(args, "breaker=")
			if !ok {
				r.fatalf("wait takes breaker=STATE")
			}
			eventually(t, r.where, func() bool { return r.br.State() == want })
		case "expect":
			r.expect(args)
		default:
			r.fatalf("unknown command %q", cmd)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// init: init [offline_after=N] [failures=N] [open_timeout=D] [initial=STATE]
func (r *scriptRun) init(args []string) {
	if r.conn != nil {
		r.fatalf("init twice")
	}
	var co ConnectivityOptions
	var bo BreakerOptions
	for _, kv := range args {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "offline_after":
			co.OfflineAfter = r.int(v)
		case "initial":
			co.Initial = State(v)
		case "failures":
			bo.Failures = uint32(r.int(v))
		case "open_timeout":
			bo.OpenTimeout = r.duration(v)
		default:
			r.fatalf("unknown init key %q", k)
		}
	}
	r.clock = newFakeClock()
	co.Now = r.clock.Now
	co.OnChange = func(from, to State, _ time.Time) { r.record(string(from), string(to)) }
	bo.OnChange = r.record
	r.conn = NewConnectivity(co)
	r.br = NewBreaker(scriptSink, bo)
	r.reg = prometheus.NewRegistry()
	NewMetrics(r.reg).Track(scriptSink, r.conn, r.br)
}

// do: breaker-do ok|fail|permanent|cancel -> ran|rejected
// and sync ok|fail -> ran|rejected, which also reports a call that ran to the
// Connectivity, as the sync engine will.
func (r *scriptRun) do(sync bool, args string) {
	outcome, want, ok := strings.Cut(args, " -> ")
	if !ok {
		r.fatalf("want OUTCOME -> ran|rejected")
	}
	var opErr error
	switch outcome {
	case "ok":
	case "fail":
		opErr = errors.New("unavailable")
	case "permanent":
		opErr = Permanent(errors.New("bad record"))
	case "cancel":
		opErr = context.Canceled
	default:
		r.fatalf("unknown outcome %q", outcome)
	}
	if sync && outcome != "ok" && outcome != "fail" {
		r.fatalf("sync takes ok or fail")
	}
	ran := false
	err := r.br.Do(func() error { ran = true; return opErr })
	switch want {
	case "ran":
		if !ran {
			r.fatalf("op was rejected: %v", err)
		}
		if !errors.Is(err, opErr) || (opErr == nil) != (err == nil) {
			r.fatalf("Do returned %v, want the op's error %v", err, opErr)
		}
	case "rejected":
		if ran {
			r.fatalf("op ran, want rejected")
		}
		if !errors.Is(err, ErrOpen) {
			r.fatalf("Do returned %v, want ErrOpen", err)
		}
	default:
		r.fatalf("want ran or rejected, not %q", want)
	}
	if sync && ran {
		if err != nil {
			r.conn.SyncFailed(err)
		} else {
			r.conn.SyncSucceeded()
		}
	}
}

// expect: one of
//
//	expect KEY=VALUE...          (keys of the snapshot, and breaker)
//	expect changes A>B C>D...    (or none; drains the log)
//	expect metric SERIES VALUE   (VALUE may be absent)
func (r *scriptRun) expect(args string) {
	kind, rest, _ := strings.Cut(args, " ")
	switch kind {
	case "changes":
		r.mu.Lock()
		got := strings.Join(r.changes, " ")
		r.changes = nil
		r.mu.Unlock()
		if got == "" {
			got = "none"
		}
		if got != rest {
			r.fatalf("changes: got %q, want %q", got, rest)
		}
	case "metric":
		i := strings.LastIndex(rest, " ")
		if i < 0 {
			r.fatalf("want metric SERIES VALUE")
		}
		series, want := rest[:i], rest[i+1:]
		if got := r.metric(series); got != want {
			r.fatalf("%s: got %s, want %s", series, got, want)
		}
	default:
		s := r.conn.Snapshot()
		for _, kv := range strings.Fields(args) {
			k, want, ok := strings.Cut(kv, "=")
			if !ok {
				r.fatalf("want KEY=VALUE, not %q", kv)
			}
			var got string
			switch k {
			case "state":
				got = string(s.State)
			case "since":
				got = r.fmtTime(s.Since)
			case "offline_since":
				got = r.fmtTime(s.OfflineSince)
			case "failures":
				got = strconv.Itoa(s.ConsecutiveFailures)
			case "last_error":
				got = s.LastError
			case "last_success":
				got = r.fmtTime(s.LastSuccess)
			case "transitions":
				got = strconv.FormatUint(s.Transitions, 10)
			case "breaker":
				got = r.br.State()
			default:
				r.fatalf("unknown key %q", k)
			}
			if got != want {
				r.fatalf("%s: got %q, want %q", k, got, want)
			}
		}
	}
}

// fmtTime writes a time as its offset from t0 ("+30s"), or "0" if zero.
func (r *scriptRun) fmtTime(tm time.Time) string {
	if tm.IsZero() {
		return "0"
	}
	return "+" + tm.Sub(t0).String()
}

// metric returns the value of one series as text, or "absent".
func (r *scriptRun) metric(series string) string {
	name, labels, _ := strings.Cut(series, "{")
	want := map[string]string{}
	if labels = strings.TrimSuffix(labels, "}"); labels != "" {
		for _, kv := range strings.Split(labels, ",") {
			k, v, ok := strings.Cut(kv, "=")
			uq, err := strconv.Unquote(v)
			if !ok || err != nil {
				r.fatalf("bad label %q", kv)
			}
			want[k] = uq
		}
	}
	mfs, err := r.reg.Gather()
	if err != nil {
		r.fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !sameLabels(m.GetLabel(), want) {
				continue
			}
			switch {
			case m.Gauge != nil:
				return strconv.FormatFloat(m.GetGauge().GetValue(), 'g', -1, 64)
			case m.Counter != nil:
				return strconv.FormatFloat(m.GetCounter().GetValue(), 'g', -1, 64)
			}
		}
	}
	return "absent"
}

func sameLabels(got []*dto.LabelPair, want map[string]string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, lp := range got {
		if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
			return false
		}
	}
	return true
}

func (r *scriptRun) int(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		r.fatalf("%v", err)
	}
	return n
}

func (r *scriptRun) duration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		r.fatalf("%v", err)
	}
	return d
}
