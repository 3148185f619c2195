package cloud

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestConfigRegistry(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	js := connect(t, s)
	ctx := testCtx(t)

	put := func(node, yaml string) (uint64, bool) {
		t.Helper()
		rev, changed, err := PutConfig(ctx, js, node, []byte(yaml))
		if err != nil {
			t.Fatalf("PutConfig(%s): %v", node, err)
		}
		return rev, changed
	}
	at := func(node string, when time.Time) (ConfigVersion, error) {
		t.Helper()
		return ConfigAt(ctx, js, node, when)
	}
	want := func(node string, when time.Time, rev uint64, yaml string) {
		t.Helper()
		v, err := at(node, when)
		if err != nil {
			t.Fatalf("ConfigAt(%s, %v): %v", node, when, err)
		}
		if v.Revision != rev || string(v.YAML) != yaml || v.Deleted {
			t.Fatalf("ConfigAt(%s, %v) = rev %d %q deleted %v, want rev %d %q", node, when, v.Revision, v.YAML, v.Deleted, rev, yaml)
		}
	}
	notFound := func(node string, when time.Time) {
		t.Helper()
		if v, err := at(node, when); !errors.Is(err, ErrNotFound) {
			t.Fatalf("ConfigAt(%s, %v) = %+v, %v; want ErrNotFound", node, when, v, err)
		}
	}

	notFound("n1", time.Time{})
	before := time.Now()
	time.Sleep(2 * time.Millisecond)

	r1, changed := put("n1", "v: 1\n")
	if !changed || r1 == 0 {
		t.Fatalf("first put: rev %d changed %v", r1, changed)
	}
	// Visible at once, whether or not HOLDFAST_CONFIG has copied it yet.
	want("n1", time.Time{}, r1, "v: 1\n")
	if r, changed := put("n1", "v: 1\n"); changed || r != r1 {
		t.Fatalf("unchanged put: rev %d changed %v, want %d false", r, changed, r1)
	}
	// Other nodes, one whose id is a prefix of another and one that needs
	// escaping, interleave with n1's versions.
	rOther, _ := put("n10", "other: 10\n")
	rBuero, _ := put("büro", "other: büro\n")
	time.Sleep(2 * time.Millisecond)
	mid1 := time.Now()
	time.Sleep(2 * time.Millisecond)
	r2, changed := put("n1", "v: 2\n")
	if !changed || r2 <= r1 {
		t.Fatalf("second put: rev %d changed %v", r2, changed)
	}
	time.Sleep(2 * time.Millisecond)
	mid2 := time.Now()
	time.Sleep(2 * time.Millisecond)
	r3, _ := put("n1", "v: 3\n")

	// Wait until the archive holds all five versions.
	eventually(t, "HOLDFAST_CONFIG to source every put", func() bool {
		st, err := js.Stream(ctx, StreamConfig)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 5
	})

	notFound("n1", before)
	want("n1", mid1, r1, "v: 1\n")
	want("n1", mid2, r2, "v: 2\n")
	want("n1", time.Time{}, r3, "v: 3\n")
	want("n1", time.Now(), r3, "v: 3\n")
	want("n10", time.Time{}, rOther, "other: 10\n")
	want("büro", time.Time{}, rBuero, "other: büro\n")
	notFound("n", time.Time{})
	notFound("n10", mid1.Add(-time.Hour))

	h, err := ConfigHistory(ctx, js, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 3 || h[0].Revision != r1 || h[1].Revision != r2 || h[2].Revision != r3 {
		t.Fatalf("history %+v, want revisions %d %d %d", h, r1, r2, r3)
	}
	for i, v := range h {
		if v.Time.Before(before) || (i > 0 && v.Time.Before(h[i-1].Time)) {
			t.Errorf("version %d time %v out of order", v.Revision, v.Time)
		}
	}
	if !h[0].Time.Before(mid1) || !h[1].Time.After(mid1) || !h[1].Time.Before(mid2) || !h[2].Time.After(mid2) {
		t.Errorf("times %v %v %v against %v %v", h[0].Time, h[1].Time, h[2].Time, mid1, mid2)
	}

	// A delete ends the config; what was in force before stays readable; a
	// later put — even of the deleted value — starts it again.
	kv, err := js.KeyValue(ctx, ConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	preDelete := time.Now()
	time.Sleep(2 * time.Millisecond)
	if err := kv.Delete(ctx, ConfigKey("n1")); err != nil {
		t.Fatal(err)
	}
	notFound("n1", time.Time{})
	want("n1", preDelete, r3, "v: 3\n")
	r4, changed := put("n1", "v: 3\n")
	if !changed || r4 <= r3 {
		t.Fatalf("put after delete: rev %d changed %v", r4, changed)
	}
	want("n1", time.Time{}, r4, "v: 3\n")
	want("n10", time.Time{}, rOther, "other: 10\n")
}

// TestConfigBeyondKVHistory: the KV keeps 64 revisions per key; older ones
// are answered from HOLDFAST_CONFIG.
func TestConfigBeyondKVHistory(t *testing.T) {
	s := startServer(t, t.TempDir())
	defer s.Close()
	js := connect(t, s)
	ctx := testCtx(t)

	const n = configHistory + 6
	var revs []uint64
	var mids []time.Time // mids[i]: after version i, before version i+1
	for i := range n {
		rev, changed, err := PutConfig(ctx, js, "n1", fmt.Appendf(nil, "v: %d\n", i))
		if err != nil || !changed {
			t.Fatalf("put %d: changed %v, %v", i, changed, err)
		}
		revs = append(revs, rev)
		// As in normal operation, the archive copies each version before
		// the next: the first versions, which only the archive keeps, carry
		// its time, later than the put by the sourcing delay.
		eventually(t, "version archived", func() bool {
			st, err := js.Stream(ctx, StreamConfig)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx)
			return err == nil && info.State.Msgs == uint64(i+1)
		})
		time.Sleep(time.Millisecond)
		mids = append(mids, time.Now())
		time.Sleep(time.Millisecond)
	}
	kv, err := js.KeyValue(ctx, ConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := kv.History(ctx, ConfigKey("n1")); err != nil || len(h) != configHistory {
		t.Fatalf("KV history: %d entries, %v", len(h), err)
	}
	eventually(t, "every version archived", func() bool {
		h, err := ConfigHistory(ctx, js, "n1")
		if err != nil {
			t.Fatal(err)
		}
		return len(h) == n
	})
	for _, i := range []int{0, 1, 5, 6, n - 1} {
		v, err := ConfigAt(ctx, js, "n1", mids[i])
		if err != nil {
			t.Fatalf("ConfigAt version %d: %v", i, err)
		}
		if v.Revision != revs[i] || string(v.YAML) != fmt.Sprintf("v: %d\n", i) {
			t.Errorf("ConfigAt version %d: rev %d %q, want rev %d", i, v.Revision, v.YAML, revs[i])
		}
	}
}

func TestSourceRevision(t *testing.T) {
	for h, want := range map[string]uint64{
		"KV_holdfast-config 17 > > $KV.holdfast-config.n1": 17,
		"KV_holdfast-config 3":                             3,
		"KV_holdfast-config":                               0,
		"":                                                 0,
		"KV_holdfast-config x":                             0,
		"KV_holdfast-config 0":                             0,
	} {
		got, err := sourceRevision(h)
		if want == 0 && err == nil || want != 0 && (err != nil || got != want) {
			t.Errorf("sourceRevision(%q) = %d, %v; want %d", h, got, err, want)
		}
	}
}
