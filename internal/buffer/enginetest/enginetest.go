// Package enginetest is the contract every buffer.Engine keeps, as a test suite
// each engine runs against real files:
//
//	func TestContract(t *testing.T) {
//		enginetest.Run(t, func(t testing.TB, dir string, maxBytes int64) buffer.Engine {
//			e, err := mylog.Open(buffer.Options{Dir: dir, MaxBytes: maxBytes})
//			require.NoError(t, err)
//			return e
//		})
//	}
//
// The crash subtest re-executes the test binary (os.Args[0]) with -test.run set
// to its own full name and kills the child with SIGKILL; the child is recognised
// by an environment variable inside Run, so the package needs no TestMain of its
// own. The ENOSPC subtest mounts a 2 MiB tmpfs and needs root (CAP_SYS_ADMIN);
// without it the subtest is skipped, unless HOLDFAST_REQUIRE_TMPFS=1 makes that
// a failure. .ci/run sets the variable wherever a probe mount succeeds.
//
// Every subtest is bounded in records and rounds. The only clocks are the random
// moment a crash child is killed and hang guards (hangLimit) far above what a
// working engine needs; no assertion depends on how fast anything is.
package enginetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// Opener opens, or reopens, the engine stored in dir with retention limit
// maxBytes, failing the test on error. maxBytes is at least 256 KiB; the suite
// closes every engine it opens.
type Opener func(t testing.TB, dir string, maxBytes int64) buffer.Engine

// Limits the suite opens engines with.
const (
	// bigMaxBytes is a limit retention never reaches in the subtests that use it.
	bigMaxBytes = 1 << 30
	// retentionSlack bounds how far above maxBytes an engine may be: it deletes
	// in units (a sealed segment, an SST, a batch of rows) and reclaims after the
	// fact (at a roll, a compaction, a commit), so it may hold maxBytes plus one
	// unit plus a commit group. Twice maxBytes admits a unit of up to about
	// maxBytes and still fails an engine that does not bound its size.
	retentionSlack = 2
	// retentionFloor: retention must not delete far more than it has to; at
	// least maxBytes/retentionFloor of payload stays readable.
	retentionFloor = 4
	// hangLimit is how long a call may take before the suite calls it hung.
	hangLimit = 2 * time.Minute
)

// Run runs the contract subtests against the engine open opens. In a crash
// child (see the crash subtest) it runs only that child's work.
func Run(t *testing.T, open Opener) {
	if os.Getenv(envCrashChild) != "" {
		// Started by the crash subtest: -test.run selects only it, and so does
		// this branch.
		t.Run("Crash", func(t *testing.T) { testCrash(t, open) })
		return
	}
	t.Run("AppendRead", func(t *testing.T) { testAppendRead(t, open) })
	t.Run("ConcurrentAppenders", func(t *testing.T) { testConcurrentAppenders(t, open) })
	t.Run("Reopen", func(t *testing.T) { testReopen(t, open) })
	t.Run("Readers", func(t *testing.T) { testReaders(t, open) })
	t.Run("Cursors", func(t *testing.T) { testCursors(t, open) })
	t.Run("Retention", func(t *testing.T) { testRetention(t, open) })
	t.Run("Remove", func(t *testing.T) { testRemove(t, open) })
	t.Run("RemoveConcurrent", func(t *testing.T) { testRemoveConcurrent(t, open) })
	t.Run("Crash", func(t *testing.T) { testCrash(t, open) })
	t.Run("ENOSPC", func(t *testing.T) { testENOSPC(t, open) })
}

// handle is an opened engine that is closed at the end of the test if the test
// did not close it itself (it failed half-way).
type handle struct {
	buffer.Engine
	closed bool
}

func openEngine(t *testing.T, open Opener, dir string, maxBytes int64) *handle {
	t.Helper()
	h := &handle{Engine: open(t, dir, maxBytes)}
	require.NotNil(t, h.Engine, "Opener returned a nil engine")
	t.Cleanup(func() {
		if !h.closed {
			h.closed = true
			if err := h.Engine.Close(); err != nil {
				t.Logf("close engine in cleanup: %v", err)
			}
		}
	})
	return h
}

// shut closes the engine and requires Close to succeed.
func (h *handle) shut(t *testing.T) {
	t.Helper()
	h.closed = true
	require.NoError(t, h.Engine.Close())
}

type record struct {
	off     uint64
	payload []byte
}

// readAll reads every record from `from` to io.EOF, copying payloads. It fails
// the test on any other error, and if the reader returns more records than the
// engine can hold.
func readAll(t *testing.T, e buffer.Engine, from uint64) []record {
	t.Helper()
	r := e.NewReader(from)
	defer func() { require.NoError(t, r.Close()) }()
	limit := e.NextOffset() - e.FirstOffset()
	var recs []record
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return recs
		}
		require.NoError(t, err, "read after offset %d", from)
		recs = append(recs, record{off: off, payload: bytes.Clone(p)})
		require.LessOrEqual(t, uint64(len(recs)), limit, "reader from %d returned more records than the engine holds", from)
	}
}

// requireDense requires recs to be exactly the offsets [first, next).
func requireDense(t *testing.T, recs []record, first, next uint64) {
	t.Helper()
	require.LessOrEqual(t, first, next, "FirstOffset after NextOffset")
	require.Len(t, recs, int(next-first), "records held from FirstOffset %d to NextOffset %d", first, next)
	for i, r := range recs {
		require.Equal(t, first+uint64(i), r.off, "offsets are dense from FirstOffset")
	}
}

// requireIdle requires the offsets of an engine with no append in flight to
// agree with each other and with Stats.
func requireIdle(t *testing.T, e buffer.Engine) {
	t.Helper()
	next, first := e.NextOffset(), e.FirstOffset()
	require.Equal(t, next, e.DurableOffset(), "with no append in flight everything is durable")
	require.LessOrEqual(t, first, next)
	s := e.Stats()
	require.Equal(t, first, s.FirstOffset, "Stats.FirstOffset")
	require.Equal(t, next, s.NextOffset, "Stats.NextOffset")
	require.NoError(t, e.Err())
}

// makePayload returns the payload named id: "id#n:" and n pseudo-random bytes
// seeded by id. A payload thus names itself and its exact length, so a reader can
// tell a record that was sent from one that never was, or one cut short.
func makePayload(id string, n int) []byte {
	h := fnv.New64a()
	h.Write([]byte(id))
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], h.Sum64())
	p := fmt.Appendf(nil, "%s#%d:", id, n)
	head := len(p)
	p = append(p, make([]byte, n)...)
	_, _ = rand.NewChaCha8(seed).Read(p[head:])
	return p
}

// parsePayload returns the id of a payload made by makePayload, and whether p is
// exactly that payload.
func parsePayload(p []byte) (id string, ok bool) {
	i := bytes.IndexByte(p, ':')
	if i < 0 {
		return "", false
	}
	head := string(p[:i])
	j := strings.LastIndexByte(head, '#')
	if j < 0 {
		return "", false
	}
	n, err := strconv.Atoi(head[j+1:])
	if err != nil || n != len(p)-i-1 {
		return "", false
	}
	id = head[:j]
	return id, bytes.Equal(p, makePayload(id, n))
}

// payloadSize is a size in [min, max) chosen by id, so sizes vary but are
// reproducible.
func payloadSize(id string, lo, hi int) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return lo + int(h.Sum32()%uint32(hi-lo))
}

// bounded runs fn on its own goroutine and fails the test if fn panics or has
// not returned after hangLimit. It is a hang guard, not a timing assertion: a
// working engine returns long before.
func bounded(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan any, 1)
	go func() {
		panicked := true
		defer func() {
			if panicked {
				done <- fmt.Sprintf("panic: %v", recover())
				return
			}
			done <- nil
		}()
		fn()
		panicked = false
	}()
	timer := time.NewTimer(hangLimit)
	defer timer.Stop()
	select {
	case p := <-done:
		if p != nil {
			t.Fatalf("%s: %v", what, p)
		}
	case <-timer.C:
		t.Fatalf("%s did not return within %v", what, hangLimit)
	}
}
