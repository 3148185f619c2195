package site

import (
	"fmt"
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
