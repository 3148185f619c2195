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
