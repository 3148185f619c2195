package cloud

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

func TestStartClose(t *testing.T) {
	t.Cleanup(func() { // runs last, after the client closes
		goleak.VerifyNone(t, testutil.IgnoreNATSSourceSetup(), testutil.IgnoreNATSAsyncPublisherOnClosed())
	})
	s := startServer(t, t.TempDir())
	if !strings.HasPrefix(s.URL(), "nats://127.0.0.1:") || strings.HasSuffix(s.URL(), ":4222") {
		t.Errorf("URL = %q, want nats://127.0.0.1:<random port>", s.URL())
	}
	js := connect(t, s)
	for _, name := range []string{StreamEvents, StreamResults, StreamLedger, StreamConfig, "KV_" + ConfigBucket, "OBJ_" + SnapshotsBucket} {
		if _, err := js.Stream(testCtx(t), name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{DataDir: t.TempDir(), Listen: "nohostport"},
		{DataDir: t.TempDir(), Listen: "127.0.0.1:99999"},
		{DataDir: t.TempDir(), Duplicates: -time.Second},
		{DataDir: t.TempDir(), MaxAge: time.Minute, Duplicates: time.Hour},
	} {
		if s, err := Start(o); err == nil {
			s.Close()
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}

func TestEnsureLayoutIdempotent(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	js := connect(t, s)
	ctx := testCtx(t)

	configs := func() map[string]jetstream.StreamConfig {
		out := map[string]jetstream.StreamConfig{}
		for _, name := range []string{StreamEvents, StreamResults, StreamLedger, StreamConfig, "KV_" + ConfigBucket, "OBJ_" + SnapshotsBucket} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
			out[name] = st.CachedInfo().Config
		}
		return out
	}
	before := configs() // Start has run EnsureLayout once
	if err := EnsureLayout(ctx, js, LayoutOptions{}); err != nil {
		t.Fatalf("second EnsureLayout: %v", err)
	}
	if err := EnsureLayout(ctx, js, LayoutOptions{}); err != nil {
		t.Fatalf("third EnsureLayout: %v", err)
	}
	after := configs()
	for name := range before {
		if !reflect.DeepEqual(before[name], after[name]) {
			t.Errorf("%s changed:\nbefore %+v\nafter  %+v", name, before[name], after[name])
		}
	}

	want := map[string][]string{
		StreamEvents:  {"holdfast.*.events.>"},
		StreamResults: {"holdfast.*.windows.>", "holdfast.*.alerts.>", "holdfast.*.watermarks.>", "holdfast.*.late.>"},
		StreamLedger:  {"holdfast.*.ledger.>"},
	}
	for name, subjects := range want {
		c := after[name]
		if !slices.Equal(c.Subjects, subjects) {
			t.Errorf("%s subjects %q, want %q", name, c.Subjects, subjects)
		}
		if c.Duplicates != DefaultDuplicates || c.Storage != jetstream.FileStorage ||
			c.MaxAge != 0 || c.MaxBytes != -1 || c.MaxMsgs != -1 || c.AllowDirect {
			t.Errorf("%s: dup %v storage %v max age %v bytes %d msgs %d direct %v", name,
				c.Duplicates, c.Storage, c.MaxAge, c.MaxBytes, c.MaxMsgs, c.AllowDirect)
		}
	}
	if c := after["KV_"+ConfigBucket]; c.MaxMsgsPerSubject != configHistory {
		t.Errorf("config history %d, want %d", c.MaxMsgsPerSubject, configHistory)
	}
	if c := after[StreamConfig]; len(c.Sources) != 1 || c.Sources[0].Name != "KV_"+ConfigBucket ||
		c.MaxMsgsPerSubject > 0 || c.MaxAge != 0 || !c.DenyDelete || !c.DenyPurge {
		t.Errorf("%s config %+v", StreamConfig, c)
	}

	// A changed option updates the streams in place.
	if err := EnsureLayout(ctx, js, LayoutOptions{Duplicates: 5 * time.Minute, MaxAge: time.Hour}); err != nil {
		t.Fatalf("EnsureLayout with new limits: %v", err)
	}
	st, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.Duplicates != 5*time.Minute || c.MaxAge != time.Hour {
		t.Errorf("after update: dup %v max age %v", c.Duplicates, c.MaxAge)
	}
}

// publish sends a batch of the records at offs (one record by default),
// compressed for even first offsets, and returns its PubAck.
func publish(t *testing.T, js jetstream.JetStream, node, kind, stream string, off uint64, more ...uint64) *jetstream.PubAck {
	t.Helper()
	var b Batch
	for _, o := range append([]uint64{off}, more...) {
		b.Append(o, []byte{0x01, byte(o)})
	}
	ack, err := js.PublishMsg(testCtx(t), BatchMsg(node, kind, stream, "normal", &b, off%2 == 0))
	if err != nil {
		t.Fatalf("publish %s:%d: %v", node, off, err)
	}
	return ack
}

func lastOffset(t *testing.T, js jetstream.JetStream, node, stream string) (uint64, bool) {
	t.Helper()
	off, ok, err := LastOffset(testCtx(t), js, node, stream)
	if err != nil {
		t.Fatalf("LastOffset(%s, %s): %v", node, stream, err)
	}
	return off, ok
}

func TestDedupAndResume(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	js := connect(t, s)
	ctx := testCtx(t)

	if _, ok := lastOffset(t, js, "n1", StreamEvents); ok {
		t.Fatal("LastOffset on an empty stream reported a position")
	}
	// The same record twice: one message.
	a1 := publish(t, js, "n1", KindEvents, "temp", 0)
	a2 := publish(t, js, "n1", KindEvents, "temp", 0)
	if a1.Duplicate || !a2.Duplicate || a1.Sequence != a2.Sequence {
		t.Fatalf("dedup: first %+v, second %+v", a1, a2)
	}
	// n1 publishes up to offset 9 across two event streams (one with a dot);
	// n2 and n10 publish higher offsets that must not leak into n1's answer.
	for off := uint64(1); off <= 9; off++ {
		stream := "temp"
		if off%2 == 0 {
			stream = "zone.a"
		}
		publish(t, js, "n1", KindEvents, stream, off)
		publish(t, js, "n10", KindEvents, "temp", 100+off)
	}
	publish(t, js, "n2", KindEvents, "temp", 500)
	publish(t, js, "n1", KindWindows, "temp", 3)
	st, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1+9+9+1 {
		t.Errorf("events stream holds %d messages, want 20", n)
	}
	check := func() {
		t.Helper()
		for _, tc := range []struct {
			node, stream string
			off          uint64
			ok           bool
		}{
			{"n1", StreamEvents, 9, true},
			{"n10", StreamEvents, 109, true},
			{"n2", StreamEvents, 500, true},
			{"n1", StreamResults, 3, true},
			{"n2", StreamResults, 0, false},
			{"n3", StreamEvents, 0, false},
			{"n1", StreamLedger, 0, false},
		} {
			if off, ok := lastOffset(t, js, tc.node, tc.stream); off != tc.off || ok != tc.ok {
				t.Errorf("LastOffset(%s, %s) = %d, %v, want %d, %v", tc.node, tc.stream, off, ok, tc.off, tc.ok)
			}
		}
	}
	check()
	if _, _, err := LastOffset(ctx, js, "n1", "NO_SUCH_STREAM"); err == nil {
		t.Error("LastOffset on a missing stream succeeded")
	}

	// Restart on the same directory: data, dedup state and positions survive.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = startServer(t, dir)
	defer s.Close()
	js = connect(t, s)
	check()
	if a := publish(t, js, "n1", KindEvents, "temp", 9); !a.Duplicate {
		t.Errorf("re-publish of n1:9 after restart stored a duplicate: %+v", a)
	}
}

func TestStoredOffsetsFindsGaps(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	js := connect(t, s)
	ctx := testCtx(t)

	var seq uint64 // PubAck sequence of the last record of the acknowledged prefix
	for off := uint64(0); off < 5; off++ {
		seq = publish(t, js, "n1", KindEvents, "temp", off).Sequence
		publish(t, js, "n2", KindEvents, "temp", off)
	}
	// In flight when the link dropped: 5 was lost, the batch 6, 9 landed,
	// 10 was lost, the batch 11, 12, 14 landed.
	publish(t, js, "n1", KindEvents, "temp", 6, 9)
	a := publish(t, js, "n2", KindEvents, "temp", 6)
	b := publish(t, js, "n1", KindEvents, "zone.a", 11, 12, 14)

	got, err := StoredOffsets(ctx, js, "n1", StreamEvents, seq)
	if err != nil {
		t.Fatal(err)
	}
	want := []Stored{{6, a.Sequence - 1, "normal"}, {9, a.Sequence - 1, "normal"}, {11, b.Sequence, "normal"}, {12, b.Sequence, "normal"}, {14, b.Sequence, "normal"}}
	if !slices.Equal(got, want) {
		t.Fatalf("StoredOffsets = %v, want %v", got, want)
	}
	if off, _ := lastOffset(t, js, "n1", StreamEvents); off != 14 {
		t.Fatalf("LastOffset = %d, want 14", off)
	}
	// Everything after the last message: nothing.
	st, _ := js.Stream(ctx, StreamEvents)
	got, err = StoredOffsets(ctx, js, "n1", StreamEvents, st.CachedInfo().State.LastSeq)
	if err != nil || len(got) != 0 {
		t.Fatalf("StoredOffsets past the end = %v, %v", got, err)
	}
}

// LastSubjectSeq and SubjectStored see one subject only: not the node's
// other streams, not other nodes, and SubjectStored nothing after upToSeq.
func TestSubjectStored(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	js := connect(t, s)
	ctx := testCtx(t)
	subject := Subject("n1", KindEvents, "temp")

	if q, err := LastSubjectSeq(ctx, js, StreamEvents, subject); err != nil || q != 0 {
		t.Fatalf("LastSubjectSeq of an empty subject = %d, %v", q, err)
	}
	a := publish(t, js, "n1", KindEvents, "temp", 0, 1)
	publish(t, js, "n2", KindEvents, "temp", 2)
	publish(t, js, "n1", KindEvents, "hum", 3)
	b := publish(t, js, "n1", KindEvents, "temp", 4)
	c := publish(t, js, "n1", KindEvents, "temp", 5)
	publish(t, js, "n1", KindEvents, "hum", 6)

	if q, err := LastSubjectSeq(ctx, js, StreamEvents, subject); err != nil || q != c.Sequence {
		t.Fatalf("LastSubjectSeq = %d, %v; want %d", q, err, c.Sequence)
	}
	got, err := SubjectStored(ctx, js, StreamEvents, subject, 0, b.Sequence)
	want := []Stored{{0, a.Sequence, "normal"}, {1, a.Sequence, "normal"}, {4, b.Sequence, "normal"}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("SubjectStored(0, %d) = %v, %v; want %v", b.Sequence, got, err, want)
	}
	got, err = SubjectStored(ctx, js, StreamEvents, subject, a.Sequence, c.Sequence+10)
	want = []Stored{{4, b.Sequence, "normal"}, {5, c.Sequence, "normal"}}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("SubjectStored(%d, end) = %v, %v; want %v", a.Sequence, got, err, want)
	}
}

func TestConfigHistory(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	js := connect(t, s)
	ctx := testCtx(t)

	kv, err := js.KeyValue(ctx, ConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	key := ConfigKey("büro-1")
	r1, err := kv.Put(ctx, key, []byte("node_id: büro-1\n"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := kv.Put(ctx, key, []byte("node_id: büro-1\nlog: {level: debug}\n"))
	if err != nil {
		t.Fatal(err)
	}
	hist, err := kv.History(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Revision() != r1 || hist[1].Revision() != r2 {
		t.Fatalf("history: %d entries, want revisions %d, %d", len(hist), r1, r2)
	}

	// Both versions reach the archive stream, with the KV revision recorded.
	archive, err := js.Stream(ctx, StreamConfig)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "config versions in "+StreamConfig, func() bool {
		info, err := archive.Info(ctx)
		return err == nil && info.State.Msgs == 2
	})
	for i, rev := range []uint64{r1, r2} {
		m, err := archive.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		src := strings.Fields(m.Header.Get("Nats-Stream-Source"))
		if m.Subject != "$KV."+ConfigBucket+"."+key || len(src) < 2 || src[1] != strconv.FormatUint(rev, 10) ||
			!bytes.Equal(m.Data, hist[i].Value()) {
			t.Errorf("archived version %d: subject %q source %q data %q", i, m.Subject, src, m.Data)
		}
	}
	if err := archive.DeleteMsg(ctx, 1); err == nil {
		t.Error("deleting an archived config version succeeded")
	}
}

func TestSnapshotObjectStore(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	js := connect(t, s)
	ctx := testCtx(t)

	obs, err := js.ObjectStore(ctx, SnapshotsBucket)
	if err != nil {
		t.Fatal(err)
	}
	name := SnapshotName("n1", time.UnixMilli(1700000000000))
	data := bytes.Repeat([]byte("snapshot "), 100_000) // several chunks
	if _, err := obs.PutBytes(ctx, name, data); err != nil {
		t.Fatal(err)
	}
	got, err := obs.GetBytes(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("object round trip: got %d bytes, want %d", len(got), len(data))
	}
	if _, err := obs.GetBytes(ctx, "n1/1.snap"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("missing object: %v", err)
	}
}
