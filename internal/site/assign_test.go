package site

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func nodes(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{NodeID: fmt.Sprintf("node-%d", i+1), State: StateAlive}
	}
	return ms
}

func devices(n int) []Device {
	ds := make([]Device, n)
	for i := range ds {
		ds[i] = Device{ID: fmt.Sprintf("sensor-%05d", i)}
	}
	return ds
}

// TestStickyJoinMovesAboutOneNth holds the sticky ring's configuration to its
// promise: a join from N to N+1 members, or a leave from N+1 to N, moves at
// most 1/(N+1) + 5 % of the devices.
func TestStickyJoinMovesAboutOneNth(t *testing.T) {
	a, err := NewAssigner(AssignOptions{Strategy: Sticky})
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range []int{1000, 10000} {
		ds := devices(nd)
		for n := 1; n <= 7; n++ {
			before, after := nodes(n), nodes(n+1)
			bound := 1/float64(n+1) + 0.05
			join := float64(Moved(a, before, after, ds)) / float64(nd)
			// The member leaving is each one in turn.
			worstLeave := 0.0
			for leaving := range after {
				rest := append(append([]Member{}, after[:leaving]...), after[leaving+1:]...)
				worstLeave = max(worstLeave, float64(Moved(a, after, rest, ds))/float64(nd))
			}
			t.Logf("%5d devices: %d→%d moves %.1f%%, worst leave %d→%d moves %.1f%% (bound %.1f%%)",
				nd, n, n+1, 100*join, n+1, n, 100*worstLeave, 100*bound)
			if join > bound {
				t.Errorf("%d devices: join %d→%d moved %.1f%% > %.1f%%", nd, n, n+1, 100*join, 100*bound)
			}
			if worstLeave > bound {
				t.Errorf("%d devices: leave %d→%d moved %.1f%% > %.1f%%", nd, n+1, n, 100*worstLeave, 100*bound)
			}
		}
	}
}

func newAssigner(t testing.TB, o AssignOptions) *Assigner {
	t.Helper()
	a, err := NewAssigner(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func shares(a *Assigner, ms []Member, ds []Device) map[string]float64 {
	out := map[string]float64{}
	for _, d := range ds {
		m, _ := a.Owner(ms, d)
		out[m.NodeID] += 1 / float64(len(ds))
	}
	return out
}

func TestParseStrategy(t *testing.T) {
	for _, s := range Strategies {
		if got, err := ParseStrategy(string(s)); err != nil || got != s {
			t.Errorf("ParseStrategy(%q) = %q, %v", s, got, err)
		}
	}
	_, err := ParseStrategy("leastloaded")
	if !errors.Is(err, ErrUnknownStrategy) {
		t.Fatalf("err %v, want ErrUnknownStrategy", err)
	}
	for _, s := range Strategies {
		if !strings.Contains(err.Error(), string(s)) {
			t.Errorf("error %q does not list %q", err, s)
		}
	}
}

func TestNewAssignerRejectsBadRules(t *testing.T) {
	_, err := NewAssigner(AssignOptions{Strategy: Semantic, Rules: []SemanticRule{
		{Devices: []string{"cam-*"}, Nodes: []string{"node-1"}},
		{Streams: []string{"temp["}, Zone: "north"},
	}})
	if err == nil || !strings.Contains(err.Error(), "rule 1") || strings.Contains(err.Error(), "rule 0") {
		t.Fatalf("err %v, want one naming rule 1", err)
	}
	if _, err := NewAssigner(AssignOptions{Strategy: "nearest"}); err == nil {
		t.Fatal("unknown strategy accepted")
	}
}

func TestOwnerEmptyViewAndOrder(t *testing.T) {
	for _, s := range Strategies {
		a := newAssigner(t, AssignOptions{Strategy: s})
		if _, ok := a.Owner(nil, Device{ID: "d"}); ok {
			t.Errorf("%s: owner in an empty view", s)
		}
		ms := nodes(5)
		rev := slices.Clone(ms)
		slices.Reverse(rev)
		for _, d := range devices(200) {
			x, ok := a.Owner(ms, d)
			y, _ := a.Owner(rev, d)
			if !ok || x.NodeID != y.NodeID {
				t.Fatalf("%s: %s owned by %q, by %q in reverse order", s, d.ID, x.NodeID, y.NodeID)
			}
		}
	}
}

func TestLoadEqualSplitsEvenly(t *testing.T) {
	a := newAssigner(t, AssignOptions{Strategy: LoadBased})
	ms := nodes(4)
	for i := range ms {
		ms[i].Load = Load{EventsPerSec: 100, CPU: 0.3, Buffer: 0.1}
	}
	for id, sh := range shares(a, ms, devices(10000)) {
		t.Logf("%s owns %.1f%%", id, 100*sh)
		if math.Abs(sh-0.25) > 0.05 {
			t.Errorf("%s owns %.1f%%, want 25 ± 5 %%", id, 100*sh)
		}
	}
}

func TestLoadLightNodeTakesMost(t *testing.T) {
	a := newAssigner(t, AssignOptions{Strategy: LoadBased})
	ms := nodes(4)
	for i := range ms {
		ms[i].Load = Load{CPU: 0.95}
	}
	ms[2].Load = Load{CPU: 0.01}
	if l0, l7 := LoadLevel(ms[2].Load, 0), LoadLevel(ms[0].Load, 0); l0 != 0 || l7 != 7 {
		t.Fatalf("levels %d and %d, want 0 and 7", l0, l7)
	}
	sh := shares(a, ms, devices(10000))
	t.Logf("light node owns %.1f%% (weights 1 vs 1/8: expect %.1f%%)", 100*sh["node-3"], 100/(1+3.0/8))
	if sh["node-3"] < 0.6 {
		t.Errorf("light node owns %.1f%%, want a clear majority", 100*sh["node-3"])
	}
	// A load change moves only a share.
	before := slices.Clone(ms)
	ms[0].Load = Load{CPU: 0.5}
	moved := float64(Moved(a, before, ms, devices(10000))) / 10000
	t.Logf("node-1 going from level 7 to 4 moves %.1f%%", 100*moved)
	if moved > 0.3 {
		t.Errorf("a load change moved %.1f%%", 100*moved)
	}
}

func TestLoadLevel(t *testing.T) {
	for _, c := range []struct {
		l    Load
		mean float64
		want int
	}{
		{Load{}, 0, 0},
		{Load{CPU: 0.5}, 0, 4},
		{Load{Buffer: 1}, 0, 7},
		{Load{CPU: 0.1, EventsPerSec: 100}, 100, 4},
		{Load{EventsPerSec: 400}, 100, 7},
		{Load{CPU: math.NaN()}, 0, 0},
	} {
		if got := LoadLevel(c.l, c.mean); got != c.want {
			t.Errorf("LoadLevel(%+v, %v) = %d, want %d", c.l, c.mean, got, c.want)
		}
	}
}

func TestGeographic(t *testing.T) {
	a := newAssigner(t, AssignOptions{Strategy: Geographic, ZoneOf: func(id string) string {
		if strings.HasPrefix(id, "n-") {
			return "north"
		}
		return ""
	}})
	ms := nodes(6)
	for i := range ms {
		ms[i].Zone = []string{"north", "south", "east"}[i%3]
	}
	for _, d := range []Device{{ID: "x1", Zone: "south"}, {ID: "n-7"}, {ID: "n-8", Zone: "east"}} {
		want := d.Zone
		if want == "" {
			want = "north"
		}
		if m, _ := a.Owner(ms, d); m.Zone != want {
			t.Errorf("%+v owned by %s in zone %q, want zone %q", d, m.NodeID, m.Zone, want)
		}
	}
	// No live member in the zone: any member.
	if _, ok := a.Owner(ms, Device{ID: "w", Zone: "west"}); !ok {
		t.Error("no owner for a zone without members")
	}
	// Within the zone, the lighter member takes most.
	ms[1].Load.CPU, ms[4].Load.CPU = 0.01, 0.99
	sh := shares(a, ms, func() []Device {
		ds := devices(2000)
		for i := range ds {
			ds[i].Zone = "south"
		}
		return ds
	}())
	if sh["node-2"] < 0.7 || sh["node-2"]+sh["node-5"] < 0.999 {
		t.Errorf("south shares %v", sh)
	}
}

func TestSemantic(t *testing.T) {
	a := newAssigner(t, AssignOptions{Strategy: Semantic, Rules: []SemanticRule{
		{Devices: []string{"cam-*"}, Nodes: []string{"node-1", "node-2", "node-9"}},
		{Streams: []string{"vibration/*"}, Zone: "plant"},
		{Devices: []string{"gone-*"}, Nodes: []string{"node-9"}},
	}})
	ms := nodes(5)
	ms[3].Zone, ms[4].Zone = "plant", "plant"
	sticky := newAssigner(t, AssignOptions{Strategy: Sticky})
	for _, d := range devices(500) {
		cam := Device{ID: "cam-" + d.ID}
		if m, _ := a.Owner(ms, cam); m.NodeID != "node-1" && m.NodeID != "node-2" {
			t.Fatalf("%s owned by %s", cam.ID, m.NodeID)
		}
		vib := Device{ID: d.ID, Stream: "vibration/x"}
		if m, _ := a.Owner(ms, vib); m.Zone != "plant" {
			t.Fatalf("%+v owned by %s", vib, m.NodeID)
		}
		for _, other := range []Device{{ID: "gone-" + d.ID}, {ID: d.ID, Stream: "temp"}} {
			m, _ := a.Owner(ms, other)
			want, _ := sticky.Owner(ms, other)
			if m.NodeID != want.NodeID {
				t.Fatalf("%+v owned by %s, sticky says %s", other, m.NodeID, want.NodeID)
			}
		}
	}
}

// BenchmarkOwner is the cost of one answer: the node asks per request.
func BenchmarkOwner(b *testing.B) {
	ms := nodes(8)
	for i := range ms {
		ms[i].Zone = []string{"a", "b"}[i%2]
		ms[i].Load = Load{EventsPerSec: float64(100 * i), CPU: 0.1 * float64(i)}
	}
	ds := devices(1024)
	for _, s := range Strategies {
		a := newAssigner(b, AssignOptions{Strategy: s, Rules: []SemanticRule{{Devices: []string{"sensor-0*"}, Zone: "a"}}})
		b.Run(string(s), func(b *testing.B) {
			i := 0
			for b.Loop() {
				a.Owner(ms, ds[i%len(ds)])
				i++
			}
		})
	}
}
