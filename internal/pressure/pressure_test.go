package pressure

import (
	"testing"
	"time"
)

// TestLevels walks utilisation up through every threshold and back down,
// checking the level after each step: rises at the threshold, falls only
// 5 points below it, jumps several levels at once both ways.
func TestLevels(t *testing.T) {
	t0 := time.Unix(0, 0)
	m := NewMonitor(DefaultThresholds, t0)
	steps := []struct {
		u    float64
		want Level
	}{
		{0.10, Normal}, {0.699, Normal}, {0.70, Warning}, {0.66, Warning}, {0.649, Normal},
		{0.85, Critical}, {0.81, Critical}, {0.799, Warning}, {0.95, Emergency}, {0.99, Emergency},
		{1.00, Full}, {0.96, Full}, {0.949, Emergency}, {0.91, Emergency}, {0.899, Critical},
		{0.20, Normal}, {1.20, Full}, {0.0, Normal},
	}
	for i, s := range steps {
		before, _ := m.Level()
		c, changed := m.Observe(s.u, t0.Add(time.Duration(i)*time.Second))
		got, since := m.Level()
		if got != s.want {
			t.Fatalf("step %d: utilisation %v: level %v, want %v", i, s.u, got, s.want)
		}
		if changed != (before != got) {
			t.Fatalf("step %d: changed=%v from %v to %v", i, changed, before, got)
		}
		if changed && (c.From != before || c.To != got || c.Utilisation != s.u || !since.Equal(c.At)) {
			t.Fatalf("step %d: change %+v", i, c)
		}
	}
}

func TestThresholdsValidate(t *testing.T) {
	if err := DefaultThresholds.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Thresholds{
		{Warning: 0.9, Critical: 0.85, Emergency: 0.95, Full: 1},
		{Warning: 0.7, Critical: 0.85, Emergency: 0.95, Full: 1.1},
		{Warning: 0.7, Critical: 0.85, Emergency: 0.95, Full: 1, Hysteresis: 0.8},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestGate(t *testing.T) {
	prio := map[string]string{"door": "critical", "hvac": "low"}
	g := NewGate(func(s string) string {
		if p, ok := prio[s]; ok {
			return p
		}
		return "normal"
	})
	admitted := func(stream string, n int) (kept int, reasons map[string]int) {
		reasons = map[string]int{}
		for range n {
			r := g.Admit(stream)
			reasons[r]++
			if r == Admitted {
				kept++
			}
		}
		return kept, reasons
	}
	for _, tc := range []struct {
		level            Level
		door, temp, hvac int // kept of 100
		tempWhy, hvacWhy string
	}{
		{Normal, 100, 100, 100, "", ""},
		{Warning, 100, 100, 100, "", ""},
		{Critical, 100, 50, 50, Sampled, Sampled},
		{Emergency, 100, 50, 0, Sampled, Refused},
		{Full, 100, 50, 0, Sampled, Refused},
	} {
		g.SetLevel(tc.level)
		for stream, want := range map[string]int{"door": tc.door, "temp": tc.temp, "hvac": tc.hvac} {
			kept, reasons := admitted(stream, 100)
			if kept != want {
				t.Errorf("%v: %s kept %d of 100, want %d (%v)", tc.level, stream, kept, want, reasons)
			}
		}
		if _, r := admitted("temp", 2); tc.tempWhy != "" && r[tc.tempWhy] != 1 {
			t.Errorf("%v: temp reasons %v", tc.level, r)
		}
		if _, r := admitted("hvac", 2); tc.hvacWhy != "" && r[tc.hvacWhy] == 0 {
			t.Errorf("%v: hvac reasons %v", tc.level, r)
		}
	}
}
