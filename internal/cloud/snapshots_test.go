package cloud

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestSnapshots(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	js := connect(t, s)
	ctx := testCtx(t)

	base := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	hour := func(i int) time.Time { return base.Add(time.Duration(i) * time.Hour) }
	put := func(node string, tm time.Time, data string) {
		t.Helper()
		if err := PutSnapshot(ctx, js, node, tm, []byte(data)); err != nil {
			t.Fatalf("PutSnapshot(%s, %v): %v", node, tm, err)
		}
	}
	names := func(node string) []string {
		t.Helper()
		list, err := ListSnapshots(ctx, js, node)
		if err != nil {
			t.Fatalf("ListSnapshots(%s): %v", node, err)
		}
		var out []string
		for _, s := range list {
			out = append(out, s.Name)
		}
		return out
	}

	if got := names("n1"); len(got) != 0 {
		t.Fatalf("empty store lists %q", got)
	}
	if _, _, err := SnapshotAt(ctx, js, "n1", time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SnapshotAt on an empty store: %v", err)
	}

	// Out of order, with other nodes' objects (one a prefix of n1's id, one
	// under n1/ as a sub-directory) and names that do not parse.
	for _, i := range []int{3, 0, 4, 1, 2} {
		put("n1", hour(i), strings.Repeat("x", i+1))
	}
	put("n10", hour(9), "other")
	put("n1/sub", hour(9), "nested")
	put("n", hour(9), "short")
	obs, err := js.ObjectStore(ctx, SnapshotsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"n1/notes.txt", "n1/007.snap", "n1/x.snap", "n1/.snap"} {
		if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, &settlingReader{data: []byte("junk")}); err != nil {
			t.Fatal(err)
		}
	}

	list, err := ListSnapshots(ctx, js, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 {
		t.Fatalf("ListSnapshots(n1) = %+v, want 5", list)
	}
	for i, s := range list {
		if s.Name != SnapshotName("n1", hour(i)) || !s.Time.Equal(hour(i)) || s.Size != uint64(i+1) {
			t.Errorf("snapshot %d = %+v, want %s at %v, %d bytes", i, s, SnapshotName("n1", hour(i)), hour(i), i+1)
		}
	}
	if got := names("n10"); !slices.Equal(got, []string{SnapshotName("n10", hour(9))}) {
		t.Errorf("n10 lists %q", got)
	}

	at := func(node string, when time.Time) (SnapshotInfo, string, error) {
		t.Helper()
		info, data, err := SnapshotAt(ctx, js, node, when)
		return info, string(data), err
	}
	for _, tc := range []struct {
		when time.Time
		i    int
	}{
		{time.Time{}, 4},
		{hour(2), 2},
		{hour(2).Add(59 * time.Minute), 2},
		{hour(100), 4},
		{hour(0), 0},
	} {
		info, data, err := at("n1", tc.when)
		if err != nil || info.Name != SnapshotName("n1", hour(tc.i)) || data != strings.Repeat("x", tc.i+1) {
			t.Errorf("SnapshotAt(%v) = %+v %q %v, want snapshot %d", tc.when, info, data, err, tc.i)
		}
	}
	if _, _, err := at("n1", hour(0).Add(-time.Millisecond)); !errors.Is(err, ErrNotFound) {
		t.Errorf("SnapshotAt before the first: %v", err)
	}
	if _, _, err := at("n2", time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("SnapshotAt of a node without snapshots: %v", err)
	}

	// Putting the same time again replaces the object.
	put("n1", hour(4), "replaced")
	if _, data, err := at("n1", time.Time{}); err != nil || data != "replaced" {
		t.Errorf("after replace: %q %v", data, err)
	}
	if got := names("n1"); len(got) != 5 {
		t.Errorf("after replace n1 lists %q", got)
	}

	if _, err := PruneSnapshots(ctx, js, "n1", -1); err == nil {
		t.Error("PruneSnapshots with keep -1 succeeded")
	}
	deleted, err := PruneSnapshots(ctx, js, "n1", 2)
	if err != nil || deleted != 3 {
		t.Fatalf("PruneSnapshots(n1, 2) = %d, %v; want 3", deleted, err)
	}
	if got, want := names("n1"), []string{SnapshotName("n1", hour(3)), SnapshotName("n1", hour(4))}; !slices.Equal(got, want) {
		t.Errorf("after prune n1 lists %q, want %q", got, want)
	}
	if deleted, err := PruneSnapshots(ctx, js, "n1", 2); err != nil || deleted != 0 {
		t.Errorf("second prune = %d, %v", deleted, err)
	}
	if _, _, err := at("n1", hour(2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("SnapshotAt of a pruned time: %v", err)
	}
	// Nothing of the others was touched.
	for _, name := range []string{SnapshotName("n10", hour(9)), SnapshotName("n1/sub", hour(9)), SnapshotName("n", hour(9)),
		"n1/notes.txt", "n1/007.snap", "n1/x.snap", "n1/.snap"} {
		if _, err := obs.GetInfo(ctx, name); err != nil {
			t.Errorf("%s after prune: %v", name, err)
		}
	}
	if deleted, err := PruneSnapshots(ctx, js, "n1", 0); err != nil || deleted != 2 || len(names("n1")) != 0 {
		t.Errorf("prune to 0 = %d, %v", deleted, err)
	}
}

func TestSnapshotTime(t *testing.T) {
	tm := time.UnixMilli(1700000000123)
	for name, ok := range map[string]bool{
		"n1/1700000000123.snap":  true,
		"n1/0.snap":              true,
		"n1/-5.snap":             true,
		"n1/01700000000123.snap": false,
		"n1/+5.snap":             false,
		"n1/a/5.snap":            false,
		"n10/5.snap":             false,
		"n1/5.snap.tmp":          false,
		"n1/5":                   false,
		"n1/.snap":               false,
	} {
		if _, got := snapshotTime("n1", name); got != ok {
			t.Errorf("snapshotTime(n1, %q) ok = %v, want %v", name, got, ok)
		}
	}
	if got, ok := snapshotTime("n1", SnapshotName("n1", tm)); !ok || !got.Equal(tm) {
		t.Errorf("round trip: %v %v", got, ok)
	}
}
