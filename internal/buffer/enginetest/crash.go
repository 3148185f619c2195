package enginetest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The crash child is the test binary re-executed with -test.run set to the
// crash subtest's full name and these variables set.
const (
	envCrashChild = "HOLDFAST_ENGINETEST_CRASH_CHILD" // full name of the crash subtest
	envCrashDir   = "HOLDFAST_ENGINETEST_CRASH_DIR"
	envCrashRound = "HOLDFAST_ENGINETEST_CRASH_ROUND"
)

const (
	crashRounds    = 8
	crashAppenders = 8
	crashCursors   = 4 // cursors committed together, always to one value
	// A child the parent fails to kill stops by itself after this many
	// records per appender and cursor commits (and at -test.timeout).
	crashPerAppender = 1 << 16
	crashCommits     = 1 << 16
	crashKillMin     = 50 * time.Millisecond
	crashKillMax     = 500 * time.Millisecond
)

func crashCursor(i int) string { return fmt.Sprintf("crash-%d", i) }

// The child reports on stdout, one line a write, each written only after the
// call it reports has returned:
//
//	ready <next>          opened; NextOffset
//	S <id> …              about to Append these payloads
//	A <first> <id> …      Append returned first for them
//	T <v>                 about to commit every crash cursor to v
//	C <v>                 CommitCursors returned for v
//	R <off> <id>          a reader returned the record
//	ERR <text>            a call failed
type crashOutput struct {
	ready     uint64
	haveReady bool
	sent      []string
	acks      map[uint64]string
	reads     map[uint64]string // records a reader returned
	tried     uint64            // highest cursor value attempted
	committed uint64            // highest cursor value acknowledged
	errs      []string
	lines     []string
}

func parseCrashOutput(t *testing.T, lines []string) crashOutput {
	t.Helper()
	out := crashOutput{acks: map[uint64]string{}, reads: map[uint64]string{}, lines: lines}
	num := func(s string) uint64 {
		n, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "child output")
		return n
	}
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "ready":
			out.ready, out.haveReady = num(f[1]), true
		case "S":
			out.sent = append(out.sent, f[1:]...)
		case "A":
			first := num(f[1])
			for i, id := range f[2:] {
				off := first + uint64(i)
				if was, dup := out.acks[off]; dup {
					require.Failf(t, "offset handed out twice", "offset %d acknowledged for %s and %s", off, was, id)
				}
				out.acks[off] = id
			}
		case "R":
			out.reads[num(f[1])] = f[2]
		case "T":
			out.tried = max(out.tried, num(f[1]))
		case "C":
			out.committed = max(out.committed, num(f[1]))
		case "ERR":
			out.errs = append(out.errs, line)
		}
	}
	return out
}

// testCrash: a child process appends from several goroutines, tails the engine
// with a reader and commits cursors until it is killed with SIGKILL at a random
// moment; after each of crashRounds kills the parent reopens the engine and
// requires every acknowledged record, and every record the child's reader
// returned, at its offset with its payload, once; offsets dense from FirstOffset
// to NextOffset; no record that was never sent; every record read back after an
// earlier crash still there; and the crash cursors all at one value, at least
// the last acknowledged.
func testCrash(t *testing.T, open Opener) {
	if name := os.Getenv(envCrashChild); name != "" {
		require.Equal(t, name, t.Name(), "crash child started for another test")
		crashChild(t, open)
		return
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill moments seeded with %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	sent := map[string]bool{}
	known := map[uint64]string{} // offset → id: acknowledged, or read back after a crash
	var next, cursorAcked, cursorTried uint64
	acked := 0
	for round := range crashRounds {
		killAfter := crashKillMin + time.Duration(rng.Int64N(int64(crashKillMax-crashKillMin)))
		out := runCrashChild(t, dir, round, killAfter)
		require.Empty(t, out.errs, "round %d: the child failed", round)
		require.True(t, out.haveReady, "round %d: the child did not open the engine", round)
		if round > 0 {
			require.Equal(t, next, out.ready, "round %d: the child opened at the NextOffset of the last check", round)
		}
		require.NotEmpty(t, out.acks, "round %d: the child acknowledged nothing", round)
		for _, id := range out.sent {
			sent[id] = true
		}
		for off, id := range out.acks {
			if was, ok := known[off]; ok {
				require.Failf(t, "offset reused", "round %d: offset %d acknowledged for %s, held %s before", round, off, id, was)
			}
			known[off] = id
		}
		for off, id := range out.reads {
			if was, ok := known[off]; ok && was != id {
				require.Failf(t, "reader disagrees", "round %d: a reader returned %s at offset %d, which holds %s", round, id, off, was)
			}
			known[off] = id // durable when read: must survive the crash
		}
		acked += len(out.acks)
		cursorAcked, cursorTried = max(cursorAcked, out.committed), max(cursorTried, out.tried)

		e := openEngine(t, open, dir, bigMaxBytes)
		requireIdle(t, e)
		first := e.FirstOffset()
		next = e.NextOffset()
		recs := readAll(t, e, 0)
		requireDense(t, recs, first, next)
		at := map[string]uint64{}
		for _, r := range recs {
			id, ok := parsePayload(r.payload)
			require.True(t, ok, "round %d: record %d is not a payload any child sent (%d bytes)", round, r.off, len(r.payload))
			require.True(t, sent[id], "round %d: record %d (%s) was never sent", round, r.off, id)
			if o, dup := at[id]; dup {
				require.Failf(t, "record stored twice", "round %d: %s at offsets %d and %d", round, id, o, r.off)
			}
			at[id] = r.off
		}
		for off, id := range known {
			off2, ok := at[id]
			require.True(t, ok, "round %d: record %d (%s) was acknowledged or read back before, and is lost", round, off, id)
			require.Equal(t, off, off2, "round %d: record %s moved", round, id)
		}
		for id, off := range at {
			known[off] = id // read back, so durable: later rounds must keep it
		}

		cs := e.Cursors()
		v, ok := cs[crashCursor(0)]
		for i := 1; i < crashCursors; i++ {
			vi, oki := cs[crashCursor(i)]
			require.Equal(t, ok, oki, "round %d: CommitCursors is all or nothing: %v", round, cs)
			require.Equal(t, v, vi, "round %d: CommitCursors is all or nothing: %v", round, cs)
		}
		if cursorAcked > 0 {
			require.True(t, ok, "round %d: acknowledged cursors are lost", round)
			require.GreaterOrEqual(t, v, cursorAcked, "round %d: an acknowledged cursor commit is lost", round)
		}
		if ok {
			require.LessOrEqual(t, v, cursorTried, "round %d: a cursor value never committed", round)
		}
		e.shut(t)
		t.Logf("round %d: killed %v after the first ack; %d acks (%d in all), %d read by the child, %d sent, %d records held, cursors at %d",
			round, killAfter.Round(time.Millisecond), len(out.acks), acked, len(out.reads), len(sent), len(recs), v)
	}
}

// runPattern is the -test.run pattern that selects exactly the test named name.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// runCrashChild runs one crash round: it starts the child, waits for its first
// acknowledged append, lets it run killAfter longer and kills it with SIGKILL.
func runCrashChild(t *testing.T, dir string, round int, killAfter time.Duration) crashOutput {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+runPattern(t.Name()), "-test.count=1",
		"-test.timeout="+(2*hangLimit).String())
	cmd.Env = append(os.Environ(), envCrashChild+"="+t.Name(), envCrashDir+"="+dir,
		envCrashRound+"="+strconv.Itoa(round))
	cmd.SysProcAttr = childProcAttr()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	var lines []string
	firstAck, eof := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(eof)
		br := bufio.NewReader(stdout)
		acked := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return // a line cut short cannot happen: each is one write
			}
			lines = append(lines, strings.TrimSuffix(line, "\n"))
			if !acked && strings.HasPrefix(line, "A ") {
				acked = true
				close(firstAck)
			}
		}
	}()
	guard := time.NewTimer(hangLimit)
	defer guard.Stop()
	select {
	case <-firstAck:
		time.Sleep(killAfter)
		_ = cmd.Process.Signal(syscall.SIGKILL)
	case <-eof: // the child ended without acknowledging anything
	case <-guard.C:
		_ = cmd.Process.Signal(syscall.SIGKILL)
	}
	<-eof
	werr := cmd.Wait()
	var ee *exec.ExitError
	killed := errors.As(werr, &ee) && isKilled(ee)
	if werr != nil && !killed {
		t.Fatalf("round %d: crash child: %v\nstdout (last lines):\n%s\nstderr:\n%s", round, werr,
			strings.Join(lines[max(0, len(lines)-20):], "\n"), stderr.String())
	}
	return parseCrashOutput(t, lines)
}

func isKilled(ee *exec.ExitError) bool {
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// crashChild is the killed process: it opens the engine in the directory the
// parent names and appends and commits cursors until it is killed, reporting
// each call as the crashOutput comment describes.
func crashChild(t *testing.T, open Opener) {
	dir := os.Getenv(envCrashDir)
	round := os.Getenv(envCrashRound)
	var mu sync.Mutex
	emit := func(format string, args ...any) {
		line := fmt.Appendf(nil, format, args...)
		line = append(bytes.ReplaceAll(line, []byte("\n"), []byte(" ")), '\n')
		mu.Lock()
		defer mu.Unlock()
		if _, err := os.Stdout.Write(line); err != nil {
			panic(fmt.Sprintf("crash child: write stdout: %v", err)) // the parent is gone
		}
	}
	e := open(t, dir, bigMaxBytes)
	emit("ready %d", e.NextOffset())

	var failed atomic.Bool
	var wg sync.WaitGroup
	for a := range crashAppenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < crashPerAppender && !failed.Load(); {
				n := min(1+seq%3, crashPerAppender-seq)
				ids := make([]string, n)
				batch := make([][]byte, n)
				for i := range n {
					ids[i] = fmt.Sprintf("r%s-a%d-%d", round, a, seq+i)
					batch[i] = makePayload(ids[i], payloadSize(ids[i], 1, 2048))
				}
				list := strings.Join(ids, " ")
				emit("S %s", list)
				first, err := e.Append(batch...)
				if err != nil {
					failed.Store(true)
					emit("ERR append: %v", err)
					return
				}
				emit("A %d %s", first, list)
				seq += n
			}
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		r := e.NewReader(e.NextOffset()) // tails what this child appends
		defer r.Close()
		for {
			off, p, err := r.Next()
			if errors.Is(err, io.EOF) {
				if e.WaitDurable(ctx, r.Position()+1) != nil {
					return // the writers are done
				}
				continue
			}
			if err != nil {
				emit("ERR read: %v", err)
				return
			}
			id, ok := parsePayload(p)
			if !ok {
				emit("ERR read: record %d is not a payload any child sent", off)
				return
			}
			emit("R %d %s", off, id)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		v0, _ := e.Cursor(crashCursor(0))
		for v := v0 + 1; v <= v0+crashCommits && !failed.Load(); v++ {
			c := make(map[string]uint64, crashCursors)
			for i := range crashCursors {
				c[crashCursor(i)] = v
			}
			emit("T %d", v)
			if err := e.CommitCursors(c); err != nil {
				failed.Store(true)
				emit("ERR commit cursors: %v", err)
				return
			}
			emit("C %d", v)
		}
	}()
	wg.Wait()
	cancel()
	<-readerDone
	require.NoError(t, e.Close())
}
