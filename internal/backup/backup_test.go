package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testutil.IgnoreNATSSourceSetup(), testutil.IgnoreNATSAsyncPublisherOnClosed())
}

// t0 is the written_at of the first checkpoint; hour(i) of the i-th.
var t0 = time.Date(2024, 5, 1, 12, 0, 0, 123_000_000, time.UTC)

func hour(i int) time.Time { return t0.Add(time.Duration(i) * time.Hour) }

// fakeNow is what the tests' clock says.
var fakeNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, what, cond)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.WaitFor)
	t.Cleanup(cancel)
	return ctx
}

// writeCheckpoint writes a checkpoint at off, as the processor names it, and
// returns its bytes.
func writeCheckpoint(t *testing.T, dir string, off uint64, at time.Time) []byte {
	t.Helper()
	c := process.Checkpoint{Offset: off, WrittenAt: at, Streams: [][]byte{fmt.Appendf(nil, "state at %d", off)}}
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.ckpt", off)), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

// damage flips a byte in the middle of the checkpoint at off.
func damage(t *testing.T, dir string, off uint64) {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("%020d.ckpt", off))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startCloud runs a cloud on listen (127.0.0.1:0 for any port) until the test
// ends.
func startCloud(t *testing.T, listen string) *cloud.Server {
	t.Helper()
	s, err := cloud.Start(cloud.Options{DataDir: t.TempDir(), Listen: listen})
	if err != nil {
		t.Fatalf("cloud.Start: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func cloudJS(t *testing.T, s *cloud.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// freeAddr returns a 127.0.0.1 address nothing listens on, below the
// ephemeral range, so no connection a test makes meanwhile can take it.
func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

// dirs returns a fresh checkpoint and snapshot directory.
func dirs(t *testing.T) (ckpt, snap string) {
	d := t.TempDir()
	return filepath.Join(d, "checkpoints"), filepath.Join(d, "snapshots")
}

// newBackup fills in what o leaves out and closes the backup when the test
// ends (before any cloud started earlier in the test).
func newBackup(t *testing.T, o Options) *Backup {
	t.Helper()
	if o.NodeID == "" {
		o.NodeID = "n1"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	o.now = func() time.Time { return fakeNow }
	o.retry = 20 * time.Millisecond
	b := New(o)
	t.Cleanup(func() { b.Close() })
	return b
}

// files lists dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func snapFiles(uploaded bool, times ...time.Time) []string {
	var out []string
	for _, tm := range times {
		out = append(out, snapName(tm.UnixMilli()))
		if uploaded {
			out = append(out, snapName(tm.UnixMilli())+uploadedExt)
		}
	}
	slices.Sort(out)
	return out
}

func cloudNames(t *testing.T, js jetstream.JetStream, node string) []string {
	t.Helper()
	list, err := cloud.ListSnapshots(testCtx(t), js, node)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range list {
		out = append(out, s.Name)
	}
	return out
}

func objectNames(node string, times ...time.Time) []string {
	var out []string
	for _, tm := range times {
		out = append(out, cloud.SnapshotName(node, tm))
	}
	return out
}

func count(c prometheus.Collector) int { return int(promtest.ToFloat64(c)) }

func TestSnapshotTakenAndUploaded(t *testing.T) {
	cl := startCloud(t, "127.0.0.1:0")
	js := cloudJS(t, cl)
	ckpt, snap := dirs(t)
	data1 := writeCheckpoint(t, ckpt, 10, hour(1))
	b := newBackup(t, Options{CloudURL: cl.URL(), CheckpointDir: ckpt, SnapshotDir: snap})
	b.Start()
	eventually(t, "the first snapshot uploaded", func() bool {
		return count(b.m.uploads) == 1 && b.Status().PendingUploads == 0
	})

	if got, want := files(t, snap), snapFiles(true, hour(1)); !slices.Equal(got, want) {
		t.Fatalf("snapshot dir %q, want %q", got, want)
	}
	local, err := os.ReadFile(filepath.Join(snap, snapName(hour(1).UnixMilli())))
	if err != nil || !bytes.Equal(local, data1) {
		t.Fatalf("local snapshot differs from the checkpoint (%v)", err)
	}
	info, remote, err := cloud.SnapshotAt(testCtx(t), js, "n1", time.Time{})
	if err != nil || info.Name != cloud.SnapshotName("n1", hour(1)) || !bytes.Equal(remote, data1) {
		t.Fatalf("cloud snapshot %+v, %v; equal %v", info, err, bytes.Equal(remote, data1))
	}
	st := b.Status()
	want := Status{LastSnapshot: hour(1), LastSnapshotBytes: int64(len(data1)), LastUpload: fakeNow}
	if !st.LastSnapshot.Equal(want.LastSnapshot) || st.LastSnapshotBytes != want.LastSnapshotBytes ||
		!st.LastUpload.Equal(fakeNow) || st.PendingUploads != 0 || st.LastError != "" || st.ConfigRevision != 0 {
		t.Errorf("status %+v, want %+v", st, want)
	}
	if count(b.m.snapshots) != 1 || count(b.m.snapshotBytes) != len(data1) || count(b.m.pending) != 0 || count(b.m.uploadFailures) != 0 {
		t.Errorf("metrics: snapshots %d bytes %d pending %d failures %d", count(b.m.snapshots),
			count(b.m.snapshotBytes), count(b.m.pending), count(b.m.uploadFailures))
	}

	// No new checkpoint: nothing new.
	if err := b.SnapshotNow(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if count(b.m.snapshots) != 1 || count(b.m.uploads) != 1 {
		t.Errorf("without a new checkpoint: snapshots %d uploads %d", count(b.m.snapshots), count(b.m.uploads))
	}
	if got, want := files(t, snap), snapFiles(true, hour(1)); !slices.Equal(got, want) {
		t.Errorf("snapshot dir %q, want %q", got, want)
	}

	// A new checkpoint: a second snapshot, uploaded by SnapshotNow itself.
	writeCheckpoint(t, ckpt, 20, hour(2))
	if err := b.SnapshotNow(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if count(b.m.snapshots) != 2 || count(b.m.uploads) != 2 {
		t.Errorf("after a new checkpoint: snapshots %d uploads %d", count(b.m.snapshots), count(b.m.uploads))
	}
	if got, want := cloudNames(t, js, "n1"), objectNames("n1", hour(1), hour(2)); !slices.Equal(got, want) {
		t.Errorf("cloud holds %q, want %q", got, want)
	}
	b.Close()
	if err := b.SnapshotNow(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("SnapshotNow after Close: %v", err)
	}

	// A restart finds both uploaded and sends nothing again.
	b2 := newBackup(t, Options{CloudURL: cl.URL(), CheckpointDir: ckpt, SnapshotDir: snap})
	b2.Start()
	if st := b2.Status(); !st.LastSnapshot.Equal(hour(2)) || st.PendingUploads != 0 {
		t.Errorf("status after restart %+v", st)
	}
	if err := b2.SnapshotNow(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if count(b2.m.snapshots) != 0 || count(b2.m.uploads) != 0 {
		t.Errorf("after restart: snapshots %d uploads %d", count(b2.m.snapshots), count(b2.m.uploads))
	}
}

func TestRetention(t *testing.T) {
	cl := startCloud(t, "127.0.0.1:0")
	js := cloudJS(t, cl)
	ctx := testCtx(t)
	// An old snapshot of n1 from an earlier life, and another node's.
	for _, node := range []string{"n1", "n2"} {
		if err := cloud.PutSnapshot(ctx, js, node, hour(-10), []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	ckpt, snap := dirs(t)
	b := newBackup(t, Options{CloudURL: cl.URL(), CheckpointDir: ckpt, SnapshotDir: snap, Keep: 3})
	for i := range 6 {
		writeCheckpoint(t, ckpt, uint64(i), hour(i))
		if err := b.SnapshotNow(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(cloudNames(t, js, "n1")); n > 3 {
			t.Fatalf("after snapshot %d the cloud holds %d of n1's", i, n)
		}
	}
	if got, want := files(t, snap), snapFiles(true, hour(3), hour(4), hour(5)); !slices.Equal(got, want) {
		t.Errorf("snapshot dir %q, want %q", got, want)
	}
	if got, want := cloudNames(t, js, "n1"), objectNames("n1", hour(3), hour(4), hour(5)); !slices.Equal(got, want) {
		t.Errorf("cloud holds %q of n1, want %q", got, want)
	}
	if got, want := cloudNames(t, js, "n2"), objectNames("n2", hour(-10)); !slices.Equal(got, want) {
		t.Errorf("cloud holds %q of n2, want %q", got, want)
	}
	if count(b.m.snapshots) != 6 || count(b.m.uploads) != 6 {
		t.Errorf("snapshots %d uploads %d, want 6 6", count(b.m.snapshots), count(b.m.uploads))
	}
}

func TestDamagedCheckpointSkipped(t *testing.T) {
	ckpt, snap := dirs(t)
	// No checkpoint yet: nothing to do, no error.
	b := newBackup(t, Options{CheckpointDir: ckpt, SnapshotDir: snap})
	if err := b.SnapshotNow(testCtx(t)); err != nil {
		t.Fatalf("without checkpoints: %v", err)
	}
	if _, err := os.Stat(snap); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("snapshot dir made without a snapshot: %v", err)
	}

	good := writeCheckpoint(t, ckpt, 10, hour(1))
	writeCheckpoint(t, ckpt, 20, hour(2))
	damage(t, ckpt, 20)
	// Files the processor may leave that are no checkpoints.
	for _, name := range []string{"00000000000000000030.ckpt.tmp", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(ckpt, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SnapshotNow(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got, want := files(t, snap), snapFiles(false, hour(1)); !slices.Equal(got, want) {
		t.Fatalf("snapshot dir %q, want %q", got, want)
	}
	if data, _ := os.ReadFile(filepath.Join(snap, snapName(hour(1).UnixMilli()))); !bytes.Equal(data, good) {
		t.Error("snapshot is not the valid checkpoint")
	}
	if st := b.Status(); st.LastError != "" || st.PendingUploads != 0 || !st.LastSnapshot.Equal(hour(1)) {
		t.Errorf("status %+v", st)
	}

	// Every checkpoint damaged: an error, reported until a snapshot works.
	damage(t, ckpt, 10)
	if err := b.SnapshotNow(testCtx(t)); err == nil {
		t.Fatal("SnapshotNow with only damaged checkpoints succeeded")
	}
	if st := b.Status(); !strings.HasPrefix(st.LastError, "snapshot: ") {
		t.Errorf("LastError %q", st.LastError)
	}
	writeCheckpoint(t, ckpt, 30, hour(3))
	if err := b.SnapshotNow(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if st := b.Status(); st.LastError != "" || !st.LastSnapshot.Equal(hour(3)) {
		t.Errorf("status after recovery %+v", st)
	}
}

func TestCloudDownThenUp(t *testing.T) {
	addr := freeAddr(t)
	ckpt, snap := dirs(t)
	writeCheckpoint(t, ckpt, 1, hour(1))
	b := newBackup(t, Options{CloudURL: "nats://" + addr, CheckpointDir: ckpt, SnapshotDir: snap, Keep: 2,
		ConfigYAML: []byte("node_id: n1\n")})
	b.Start()
	eventually(t, "the failures reported", func() bool {
		st := b.Status()
		return st.PendingUploads == 1 && strings.Contains(st.LastError, "upload: ") && strings.Contains(st.LastError, "config: ")
	})
	// More snapshots while down: local retention bounds what is pending.
	for i := 2; i <= 3; i++ {
		writeCheckpoint(t, ckpt, uint64(i), hour(i))
		if err := b.SnapshotNow(testCtx(t)); err != nil {
			t.Fatalf("snapshot while the cloud is down: %v", err)
		}
	}
	if st := b.Status(); st.PendingUploads != 2 || st.ConfigRevision != 0 || !st.LastUpload.IsZero() {
		t.Errorf("status while down %+v", st)
	}
	if got, want := files(t, snap), snapFiles(false, hour(2), hour(3)); !slices.Equal(got, want) {
		t.Errorf("snapshot dir while down %q, want %q", got, want)
	}
	if count(b.m.uploadFailures) == 0 || count(b.m.pending) != 2 {
		t.Errorf("metrics while down: failures %d pending %d", count(b.m.uploadFailures), count(b.m.pending))
	}

	cl := startCloud(t, addr)
	eventually(t, "everything uploaded once the cloud is up", func() bool {
		st := b.Status()
		return st.PendingUploads == 0 && st.LastError == "" && st.ConfigRevision != 0
	})
	js := cloudJS(t, cl)
	if got, want := cloudNames(t, js, "n1"), objectNames("n1", hour(2), hour(3)); !slices.Equal(got, want) {
		t.Errorf("cloud holds %q, want %q", got, want)
	}
	if got, want := files(t, snap), snapFiles(true, hour(2), hour(3)); !slices.Equal(got, want) {
		t.Errorf("snapshot dir %q, want %q", got, want)
	}
	v, err := cloud.ConfigAt(testCtx(t), js, "n1", time.Time{})
	if err != nil || string(v.YAML) != "node_id: n1\n" || v.Revision != b.Status().ConfigRevision {
		t.Errorf("config in the cloud %+v, %v", v, err)
	}
	if count(b.m.uploads) != 2 || count(b.m.configPublished) != 1 || count(b.m.pending) != 0 {
		t.Errorf("metrics: uploads %d config %d pending %d", count(b.m.uploads), count(b.m.configPublished), count(b.m.pending))
	}
}

func TestConfigPublished(t *testing.T) {
	cl := startCloud(t, "127.0.0.1:0")
	js := cloudJS(t, cl)
	ckpt, snap := dirs(t)
	run := func(node, yaml string) (rev uint64, published int) {
		t.Helper()
		b := newBackup(t, Options{NodeID: node, CloudURL: cl.URL(), CheckpointDir: ckpt, SnapshotDir: snap, ConfigYAML: []byte(yaml)})
		b.Start()
		eventually(t, "the config published", func() bool { return b.Status().ConfigRevision != 0 })
		b.Close()
		return b.Status().ConfigRevision, count(b.m.configPublished)
	}
	r1, n := run("n1", "a: 1\n")
	if n != 1 {
		t.Errorf("first start published %d versions", n)
	}
	if r, n := run("n1", "a: 1\n"); r != r1 || n != 0 {
		t.Errorf("same config again: revision %d (want %d), published %d", r, r1, n)
	}
	rOther, _ := run("n2", "b: 2\n")
	r2, n := run("n1", "a: 2\n")
	if r2 <= rOther || n != 1 {
		t.Errorf("changed config: revision %d (previous %d), published %d", r2, r1, n)
	}
	ctx := testCtx(t)
	h, err := cloud.ConfigHistory(ctx, js, "n1")
	if err != nil || len(h) != 2 || string(h[0].YAML) != "a: 1\n" || h[0].Revision != r1 || string(h[1].YAML) != "a: 2\n" || h[1].Revision != r2 {
		t.Errorf("n1's history %+v, %v", h, err)
	}
	if v, err := cloud.ConfigAt(ctx, js, "n2", time.Time{}); err != nil || string(v.YAML) != "b: 2\n" {
		t.Errorf("n2's config %+v, %v", v, err)
	}
}

func TestLoopTakesSnapshots(t *testing.T) {
	ckpt, snap := dirs(t)
	writeCheckpoint(t, ckpt, 1, hour(1))
	b := newBackup(t, Options{CheckpointDir: ckpt, SnapshotDir: snap, Interval: 20 * time.Millisecond})
	b.Start()
	b.Start() // no second loop
	eventually(t, "the snapshot at start", func() bool { return b.Status().LastSnapshot.Equal(hour(1)) })
	writeCheckpoint(t, ckpt, 2, hour(2))
	eventually(t, "the next tick's snapshot", func() bool { return b.Status().LastSnapshot.Equal(hour(2)) })
	if got, want := files(t, snap), snapFiles(false, hour(1), hour(2)); !slices.Equal(got, want) {
		t.Errorf("snapshot dir %q, want %q", got, want)
	}
	if st := b.Status(); st.PendingUploads != 0 || st.LastError != "" {
		t.Errorf("local-only status %+v", st)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRetainCleansUp(t *testing.T) {
	_, snap := dirs(t)
	if err := os.MkdirAll(snap, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"1.snap", "2.snap", "2.snap.uploaded", "3.snap", "3.snap.uploaded",
		"0.snap.uploaded", "4.snap.tmp", "007.snap", "README"} {
		if err := os.WriteFile(filepath.Join(snap, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	left, err := retain(snap, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || left[0].ms != 2 || !left[0].uploaded || left[1].ms != 3 || !left[1].uploaded {
		t.Errorf("retain left %+v", left)
	}
	if got, want := files(t, snap), []string{"007.snap", "2.snap", "2.snap.uploaded", "3.snap", "3.snap.uploaded", "README"}; !slices.Equal(got, want) {
		t.Errorf("dir %q, want %q", got, want)
	}
}

func TestStatusJSON(t *testing.T) {
	b, err := json.Marshal(Status{LastSnapshot: t0, LastSnapshotBytes: 5, PendingUploads: 1, ConfigRevision: 7, LastError: "x"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"last_snapshot":"2024-05-01T12:00:00.123Z","last_snapshot_bytes":5,"pending_uploads":1,"config_revision":7,"last_error":"x"}`
	if string(b) != want {
		t.Errorf("JSON %s, want %s", b, want)
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := New(Options{NodeID: "n1", Registerer: reg})
	defer b.Close()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	want := []string{"holdfast_config_versions_published_total", "holdfast_snapshot_bytes",
		"holdfast_snapshot_duration_seconds", "holdfast_snapshot_pending_uploads",
		"holdfast_snapshot_upload_failures_total", "holdfast_snapshot_uploads_total", "holdfast_snapshots_total"}
	if !slices.Equal(names, want) {
		t.Errorf("registered %q, want %q", names, want)
	}
	// nil Registerer: nothing registered, nothing panics.
	New(Options{NodeID: "n1"}).Close()
}
