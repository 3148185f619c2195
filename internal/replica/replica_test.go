package replica

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/engines"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// A standby copies the primary's log offset for offset — records the primary
// removed become holes — its cursors as one snapshot, and its mirrored files,
// deletions included; a report travels until accepted.
func TestFollowerCopiesLogCursorsAndFiles(t *testing.T) {
	var got reports
	p := newPair(t, SourceOptions{Files: []string{"lanes", "checkpoints"}, OnReport: got.accept},
		buffer.Options{SegmentBytes: 4096, MaxBytes: 1 << 30})
	for range 30 { // commit groups of 10: segments roll between them
		appendN(t, p.plog, 10, 50)
	}
	// Records removed by the pressure levels: a gap inside the log, and
	// one at the start.
	removed := []uint64{0, 1, 40, 41, 42, 100}
	if got, err := p.plog.(buffer.Remover).Remove(removed, func(h []uint64) []uint64 { return h }); err != nil || len(got) != len(removed) {
		t.Fatalf("Remove = %v, %v", got, err)
	}
	if err := p.plog.CommitCursors(map[string]uint64{"sync:cloud:normal": 120, "=sync:cloud:temp": 77}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(p.pdir, "lanes"), "lanes v1")
	writeFile(t, filepath.Join(p.pdir, "checkpoints", "00000000000000000100.ckpt"), "ckpt 100")
	writeFile(t, filepath.Join(p.pdir, "checkpoints", "00000000000000000200.ckpt"), "ckpt 200")
	writeFile(t, filepath.Join(p.pdir, "checkpoints", "00000000000000000300.ckpt.tmp"), "being written")
	// A file the standby holds that the primary does not: deleted.
	writeFile(t, filepath.Join(p.sdir, "checkpoints", "00000000000000000050.ckpt"), "old")

	reported := make(chan struct{})
	p.startFollower(t, FollowerOptions{
		Report: func() []byte {
			select {
			case <-reported:
				return nil
			default:
				return []byte("quarantine 7-9")
			}
		},
		ReportDone: func() { close(reported) },
	})
	p.caughtUp(t)
	sameLog(t, p.plog, p.slog)
	testutil.Eventually(t, "cursors", func() bool { return p.slog.Cursors()["sync:cloud:normal"] == 120 })
	if v, _ := p.slog.Cursor("=sync:cloud:temp"); v != 77 {
		t.Fatalf("value cursor %d, want 77 (applied with its positions)", v)
	}
	ckpt := func(n string) string { return filepath.Join(p.sdir, "checkpoints", n) }
	testutil.Eventually(t, "files mirrored", func() bool {
		_, err := os.Stat(ckpt("00000000000000000050.ckpt"))
		_, err2 := os.Stat(ckpt("00000000000000000200.ckpt"))
		return errors.Is(err, os.ErrNotExist) && err2 == nil
	})
	if s := readFile(t, filepath.Join(p.sdir, "lanes")); s != "lanes v1" {
		t.Fatalf("lanes %q", s)
	}
	if _, err := os.Stat(ckpt("00000000000000000300.ckpt.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a .tmp file was mirrored: %v", err)
	}
	select {
	case <-reported:
	case <-time.After(testutil.WaitFor):
		t.Fatal("report never accepted")
	}
	if len(got.got) == 0 || got.got[0] != "b:quarantine 7-9" {
		t.Fatalf("reports %q", got.got)
	}

	// The primary moves on: a checkpoint replaced by a newer one, the lanes
	// file rewritten, more records and cursors.
	os.Remove(filepath.Join(p.pdir, "checkpoints", "00000000000000000100.ckpt"))
	writeFile(t, filepath.Join(p.pdir, "checkpoints", "00000000000000000400.ckpt"), "ckpt 400")
	writeFile(t, filepath.Join(p.pdir, "lanes"), "lanes v2, longer")
	appendN(t, p.plog, 200, 80)
	if err := p.plog.CommitCursors(map[string]uint64{"sync:cloud:normal": 450, "=sync:cloud:temp": 99}); err != nil {
		t.Fatal(err)
	}
	appendN(t, p.plog, 1, 80) // wakes the long poll
	p.caughtUp(t)
	testutil.Eventually(t, "new files mirrored", func() bool {
		_, gone := os.Stat(ckpt("00000000000000000100.ckpt"))
		b, _ := os.ReadFile(ckpt("00000000000000000400.ckpt"))
		l, _ := os.ReadFile(filepath.Join(p.sdir, "lanes"))
		return errors.Is(gone, os.ErrNotExist) && string(b) == "ckpt 400" && string(l) == "lanes v2, longer"
	})
	testutil.Eventually(t, "new cursors", func() bool { return p.slog.Cursors()["sync:cloud:normal"] == 450 })
	if v, _ := p.slog.Cursor("=sync:cloud:temp"); v != 99 {
		t.Fatalf("value cursor %d, want 99", v)
	}
	sameLog(t, p.plog, p.slog)
	if h := promtest.ToFloat64(p.fol.m.holes); h != float64(len(removed)) {
		t.Fatalf("holes %v, want %d", h, len(removed))
	}
	if n, next, _ := p.fol.Lag(); n != 0 || next != p.plog.NextOffset() {
		t.Fatalf("Lag = %d, %d", n, next)
	}
	if m, next, _ := p.src.Replicated(); m != "b" || next != p.plog.NextOffset() {
		t.Fatalf("Replicated = %s, %d", m, next)
	}
}

// A cursors snapshot is applied only whole, once the standby holds every
// position in it.
func TestCursorsWaitForTheirRecords(t *testing.T) {
	f := &Follower{buf: openLog(t, t.TempDir(), buffer.Options{})}
	appendN(t, f.buf, 10, 10)
	if err := f.applyCursors(map[string]uint64{"sync:a:normal": 5, "=sync:a:s": 1}); err != nil {
		t.Fatal(err)
	}
	if err := f.applyCursors(map[string]uint64{"sync:a:normal": 20, "=sync:a:s": 2}); err != nil {
		t.Fatal(err)
	}
	c := f.buf.Cursors()
	if c["sync:a:normal"] != 5 || c["=sync:a:s"] != 1 {
		t.Fatalf("cursors %v, want the first snapshot only", c)
	}
	appendN(t, f.buf, 15, 10)
	if err := f.applyCursors(map[string]uint64{"sync:a:normal": 30, "=sync:a:s": 3}); err != nil {
		t.Fatal(err)
	}
	c = f.buf.Cursors()
	if c["sync:a:normal"] != 20 || c["=sync:a:s"] != 2 {
		t.Fatalf("cursors %v, want the pending second snapshot", c)
	}
}

// WaitReplicated releases once the standby has said (its next fetch) that it
// holds the offset durably, and returns ctx's error while it is stopped.
func TestWaitReplicated(t *testing.T) {
	p := newPair(t, SourceOptions{}, buffer.Options{})
	appendN(t, p.plog, 10, 20)
	p.startFollower(t, FollowerOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), testutil.WaitFor)
	defer cancel()
	for i := range 5 {
		appendN(t, p.plog, 1, 20)
		off := p.plog.NextOffset()
		if err := p.src.WaitReplicated(ctx, off); err != nil {
			t.Fatal(err)
		}
		if n := p.slog.DurableOffset(); n < off {
			t.Fatalf("round %d: released at %d while the standby holds only %d durably", i, off, n)
		}
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	appendN(t, p.plog, 1, 20)
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := p.src.WaitReplicated(short, p.plog.NextOffset()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReplicated with the standby stopped = %v, want the deadline", err)
	}
}

// A restarted standby resumes at its next offset: nothing appended twice.
func TestRestartedFollowerResumes(t *testing.T) {
	p := newPair(t, SourceOptions{}, buffer.Options{})
	appendN(t, p.plog, 500, 30)
	p.startFollower(t, FollowerOptions{})
	p.caughtUp(t)
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	p.slog.Close()
	p.slog = openLog(t, p.sdir, buffer.Options{})
	appendN(t, p.plog, 100, 30)
	p.reg = prometheus.NewRegistry()
	p.startFollower(t, FollowerOptions{})
	p.caughtUp(t)
	sameLog(t, p.plog, p.slog)
	if n := promtest.ToFloat64(p.fol.m.records); n != 100 {
		t.Fatalf("the restarted standby appended %v records, want 100", n)
	}
}

// Members with different node ids never replicate, and say why.
func TestNodeIDMismatch(t *testing.T) {
	p := newPair(t, SourceOptions{NodeID: "site-a"}, buffer.Options{})
	appendN(t, p.plog, 5, 10)
	p.startFollower(t, FollowerOptions{NodeID: "site-b"})
	select {
	case err := <-p.done:
		p.cancel = nil
		if !errors.Is(err, ErrNodeID) {
			t.Fatalf("Run = %v, want ErrNodeID", err)
		}
		t.Log(err)
	case <-time.After(testutil.WaitFor):
		t.Fatal("the follower went on with another node id")
	}
	if n := p.slog.NextOffset(); n != 0 {
		t.Fatalf("the standby appended %d records", n)
	}
}

// A standby of another term, or a member that is not a valid primary, is
// refused; once the terms agree replication goes on.
func TestTermMismatchRefused(t *testing.T) {
	p := newPair(t, SourceOptions{}, buffer.Options{})
	appendN(t, p.plog, 5, 10)
	p.followTerm.Store(2)
	p.startFollower(t, FollowerOptions{})
	errs := func(why string) float64 { return promtest.ToFloat64(p.fol.m.fetchErrors.WithLabelValues(why)) }
	testutil.Eventually(t, "a refused fetch", func() bool { return errs("term") > 0 })
	p.term.Store(0) // no longer a valid primary
	p.followTerm.Store(3)
	testutil.Eventually(t, "a refusal by a member that is not primary", func() bool { return errs("not_primary") > 0 })
	if n := p.slog.NextOffset(); n != 0 {
		t.Fatalf("the standby appended %d records while refused", n)
	}
	p.term.Store(3)
	p.caughtUp(t)
}

// A reply carries at most MaxBytes of records, at least one; a larger
// record travels alone.
func TestReplyBound(t *testing.T) {
	const bound = 64 << 10
	p := newPair(t, SourceOptions{MaxBytes: bound}, buffer.Options{})
	appendN(t, p.plog, 300, 1000)
	appendN(t, p.plog, 1, 200<<10)
	appendN(t, p.plog, 10, 1000)
	from := uint64(0)
	replies := 0
	for from < p.plog.NextOffset() {
		req := (&fetch{term: 3, nodeID: "site-a", member: "t", from: from}).encode()
		msg, err := p.snc.Request(subject, req, testutil.WaitFor)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := decodeReply(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, pl := range rep.payloads {
			size += len(pl)
		}
		switch {
		case len(rep.offs) == 0:
			t.Fatalf("empty reply at %d", from)
		case len(rep.offs) == 1 && size > bound:
			// a large record, alone
		case size > bound:
			t.Fatalf("reply at %d holds %d bytes of %d records, over %d", from, size, len(rep.offs), bound)
		}
		if rep.offs[0] != from {
			t.Fatalf("reply at %d starts at %d", from, rep.offs[0])
		}
		from = rep.end
		replies++
	}
	if replies < 300*1000/bound+1 {
		t.Fatalf("%d replies", replies)
	}
	// And a follower copies it all.
	p.startFollower(t, FollowerOptions{})
	p.caughtUp(t)
	sameLog(t, p.plog, p.slog)
}

// A new standby of a primary whose oldest records retention deleted writes
// holes up to the primary's FirstOffset, in large Appends.
func TestPrimaryFirstOffsetAboveZero(t *testing.T) {
	p := newPair(t, SourceOptions{}, buffer.Options{SegmentBytes: 64 << 10, MaxBytes: 128 << 10})
	appendN(t, p.plog, 150_000, 12)
	first := p.plog.FirstOffset()
	if first < 2*holeChunk {
		t.Fatalf("retention left FirstOffset at %d", first)
	}
	p.startFollower(t, FollowerOptions{})
	p.caughtUp(t)
	sameLog(t, p.plog, p.slog)
	if h := promtest.ToFloat64(p.fol.m.holes); h != float64(first) {
		t.Fatalf("%v holes, want %d", h, first)
	}
}

// The source refuses a standby that holds more than the primary.
func TestStandbyAheadDiverged(t *testing.T) {
	p := newPair(t, SourceOptions{}, buffer.Options{})
	appendN(t, p.plog, 5, 10)
	appendN(t, p.slog, 8, 10)
	p.startFollower(t, FollowerOptions{})
	select {
	case err := <-p.done:
		p.cancel = nil
		if !errors.Is(err, ErrDiverged) {
			t.Fatalf("Run = %v, want ErrDiverged", err)
		}
	case <-time.After(testutil.WaitFor):
		t.Fatal("the follower went on past a diverged log")
	}
}

// A standby whose last record is not the primary's (an old primary's tail
// that the new primary overwrote) is refused.
func TestStandbyTailDiverged(t *testing.T) {
	p := newPair(t, SourceOptions{}, buffer.Options{})
	appendN(t, p.plog, 10, 10)
	p.startFollower(t, FollowerOptions{})
	p.caughtUp(t)
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	// Both write offset 10, differently.
	appendN(t, p.plog, 3, 12)
	appendN(t, p.slog, 1, 11)
	p.startFollower(t, FollowerOptions{})
	select {
	case err := <-p.done:
		p.cancel = nil
		if !errors.Is(err, ErrDiverged) {
			t.Fatalf("Run = %v, want ErrDiverged", err)
		}
		t.Log(err)
	case <-time.After(testutil.WaitFor):
		t.Fatal("the follower went on past a diverged log")
	}
}

// The buffers may be of any engine, each its own: the copy is by offset, not
// by file.
func TestEveryEnginePair(t *testing.T) {
	for _, pname := range engines.Names {
		for _, sname := range engines.Names {
			t.Run(pname+"-to-"+sname, func(t *testing.T) {
				p := newPairOn(t, pname, SourceOptions{}, buffer.Options{SegmentBytes: 4096, MaxBytes: 1 << 30})
				for range 20 {
					appendN(t, p.plog, 50, 40)
				}
				if r, ok := p.plog.(buffer.Remover); ok {
					if _, err := r.Remove([]uint64{3, 4, 500}, func(h []uint64) []uint64 { return h }); err != nil {
						t.Fatal(err)
					}
				}
				if err := p.plog.CommitCursors(map[string]uint64{"sync:cloud:high": 900, "=sync:cloud:s": 4}); err != nil {
					t.Fatal(err)
				}
				standby, err := engines.Open(sname, buffer.Options{Dir: filepath.Join(t.TempDir(), sname)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { standby.Close() })
				p.startFollowerOn(t, standby, FollowerOptions{})
				testutil.Eventually(t, "the standby to catch up", func() bool { return standby.DurableOffset() == p.plog.NextOffset() })
				sameLog(t, p.plog, standby)
				testutil.Eventually(t, "cursors", func() bool { return standby.Cursors()["sync:cloud:high"] == 900 })
			})
		}
	}
}

// Files travel only with a reply that reaches the primary's durable end, so
// a checkpoint never reaches the standby before the records it refers to; a
// file larger than the reply bound is left out, and records still flow.
func TestFilesTravelAtTheDurableEnd(t *testing.T) {
	const bound = 64 << 10
	p := newPair(t, SourceOptions{MaxBytes: bound, Files: []string{"lanes", "checkpoints"}}, buffer.Options{})
	writeFile(t, filepath.Join(p.pdir, "lanes"), "lanes")
	writeFile(t, filepath.Join(p.pdir, "checkpoints", "big.ckpt"), string(make([]byte, bound+1)))
	appendN(t, p.plog, 300, 1000)
	from, sawFiles := uint64(0), false
	for range 20 {
		req := (&fetch{term: 3, nodeID: "site-a", member: "t", from: from, digests: map[string][digestSize]byte{}}).encode()
		msg, err := p.snc.Request(subject, req, testutil.WaitFor)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := decodeReply(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.files) > 0 {
			if rep.end != p.plog.NextOffset() {
				t.Fatalf("files sent with a reply ending at %d, before the durable end %d", rep.end, p.plog.NextOffset())
			}
			if len(rep.files) != 1 || rep.files[0].name != "lanes" {
				t.Fatalf("files %v, want lanes only", rep.files)
			}
			sawFiles = true
			break
		}
		from = rep.end
	}
	if !sawFiles {
		t.Fatal("the lanes file never travelled")
	}
	if n := promtest.ToFloat64(p.src.m.skipped); n != 1 {
		t.Fatalf("skipped files %v, want 1", n)
	}
}

// A fetch with nothing to read waits up to Wait, and Close ends the wait.
func TestLongPoll(t *testing.T) {
	p := newPair(t, SourceOptions{Wait: 200 * time.Millisecond}, buffer.Options{})
	appendN(t, p.plog, 3, 10)
	req := (&fetch{term: 3, nodeID: "site-a", member: "t", from: 3}).encode()
	start := time.Now()
	msg, err := p.snc.Request(subject, req, testutil.WaitFor)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := decodeReply(msg.Data); err != nil || len(rep.offs) != 0 {
		t.Fatalf("%+v, %v", rep, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("an empty fetch came back after %v, before Wait", d)
	}
	// A record appended meanwhile ends the wait early.
	go func() {
		time.Sleep(50 * time.Millisecond)
		appendN(t, p.plog, 1, 10)
	}()
	msg, err = p.snc.Request(subject, req, testutil.WaitFor)
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := decodeReply(msg.Data); err != nil || len(rep.offs) != 1 || rep.offs[0] != 3 {
		t.Fatalf("%+v, %v", rep, err)
	}
	// Close ends a waiting fetch.
	p.src.o.Wait = time.Hour
	req = (&fetch{term: 3, nodeID: "site-a", member: "t", from: 4}).encode()
	go func() {
		time.Sleep(50 * time.Millisecond)
		p.src.Close()
	}()
	msg, err = p.snc.Request(subject, req, testutil.WaitFor)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeReply(msg.Data); !errors.Is(err, ErrNotPrimary) {
		t.Fatalf("a fetch waiting when the source closed: %v", err)
	}
}
