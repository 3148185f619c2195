package degrade

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/pressure"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// run feeds c every second for d and returns the level changes it saw.
func run(m *Machine, now *time.Time, d time.Duration, c func(i int) Conditions) []Change {
	var out []Change
	for i := 0; time.Duration(i)*time.Second < d; i++ {
		*now = now.Add(time.Second)
		if ch, ok := m.Observe(c(i), *now); ok {
			out = append(out, ch)
		}
	}
	return out
}

func steady(c Conditions) func(int) Conditions { return func(int) Conditions { return c } }

// TestEachLevelUpAndDown drives each level up from normal by its own
// condition and back down, and checks the entry delay, the hold time, the
// reasons and the feature row at each.
func TestEachLevelUpAndDown(t *testing.T) {
	o := DefaultOptions
	for _, tc := range []struct {
		level Level
		c     Conditions
		why   string
	}{
		{Degraded, Conditions{SinksOffline: []string{"cloud"}}, "degraded: sink offline: cloud"},
		{Limited, Conditions{CPU: 0.9}, "limited: cpu 90% > 80%"},
		{Limited, Conditions{AckP99: 150 * time.Millisecond}, "limited: ack p99 150ms > 100ms"},
		{Limited, Conditions{Queue: 20_000}, "limited: processing queue 20000 > 10000 records"},
		{Minimal, Conditions{Memory: 0.88}, "minimal: memory 88% > 85%"},
		{Minimal, Conditions{Buffer: pressure.Critical}, "minimal: buffer pressure critical"},
		{Emergency, Conditions{Memory: 0.97}, "emergency: memory 97% > 95%"},
		{Emergency, Conditions{Buffer: pressure.Full}, "emergency: buffer pressure full"},
		{Emergency, Conditions{BufferFailed: true}, "emergency: buffer failed"},
	} {
		t.Run(tc.why, func(t *testing.T) {
			now := t0
			m := NewMachine(o, now)
			enter := o.level(tc.level).EnterAfter
			ch := run(m, &now, enter+2*time.Second, steady(tc.c))
			require.NotEmpty(t, ch)
			last := ch[len(ch)-1]
			require.Equal(t, tc.level, last.To)
			require.Contains(t, last.Reasons, tc.why)
			require.Equal(t, Row(tc.level), m.Status().Features)
			require.Equal(t, tc.level.String(), m.Status().Level.String())

			// Back to nothing: the level holds for its hold time, then goes.
			hold := o.level(tc.level).Hold
			ch = run(m, &now, hold-time.Second, steady(Conditions{}))
			require.Empty(t, ch, "left before its hold time")
			ch = run(m, &now, 3*time.Minute, steady(Conditions{}))
			require.NotEmpty(t, ch)
			require.Equal(t, Normal, ch[len(ch)-1].To)
			l, _ := m.Level()
			require.Equal(t, Normal, l)
			require.Empty(t, m.Status().Reasons)
		})
	}
}

// TestStepsThroughEveryLevel goes normal → degraded → limited → minimal →
// emergency and back down one level at a time.
func TestStepsThroughEveryLevel(t *testing.T) {
	now := t0
	m := NewMachine(DefaultOptions, now)
	up := []Conditions{
		{SinksOffline: []string{"cloud"}},
		{SinksOffline: []string{"cloud"}, CPU: 0.9},
		{SinksOffline: []string{"cloud"}, CPU: 0.9, Memory: 0.88},
		{SinksOffline: []string{"cloud"}, CPU: 0.9, Memory: 0.99},
	}
	for i, c := range up {
		run(m, &now, time.Minute, steady(c))
		l, _ := m.Level()
		require.Equal(t, Level(i+1), l)
	}
	require.Len(t, m.Status().Reasons, 4) // one per level entered
	for i := len(up) - 2; i >= 0; i-- {
		run(m, &now, 5*time.Minute, steady(up[i]))
		l, _ := m.Level()
		require.Equal(t, Level(i+1), l)
	}
	run(m, &now, 5*time.Minute, steady(Conditions{}))
	l, _ := m.Level()
	require.Equal(t, Normal, l)
}

// TestNoFlapping feeds, for each level, a figure oscillating around its
// entry threshold, then around its exit threshold, with several periods:
// the level changes at most once each way, never back and forth. A sink
// going offline and back (on or off, no band) is held for shorter periods
// than the level's hold time.
func TestNoFlapping(t *testing.T) {
	o := DefaultOptions
	cases := []struct {
		name        string
		level       Level
		enter, exit float64
		at          func(v float64) Conditions
	}{
		{"limited cpu", Limited, 0.80, 0.60, func(v float64) Conditions { return Conditions{CPU: v} }},
		{"limited latency", Limited, 0.100, 0.050, func(v float64) Conditions { return Conditions{AckP99: time.Duration(v * float64(time.Second))} }},
		{"limited queue", Limited, 10_000, 1_000, func(v float64) Conditions { return Conditions{Queue: uint64(v)} }},
		{"minimal memory", Minimal, 0.85, 0.75, func(v float64) Conditions { return Conditions{Memory: v} }},
		{"emergency memory", Emergency, 0.95, 0.90, func(v float64) Conditions { return Conditions{Memory: v} }},
		{"degraded sink", Degraded, 1, 0.5, func(v float64) Conditions {
			if v >= 1 {
				return Conditions{SinksOffline: []string{"cloud"}}
			}
			return Conditions{}
		}},
		{"minimal buffer", Minimal, float64(pressure.Critical), float64(pressure.Warning), func(v float64) Conditions {
			return Conditions{Buffer: pressure.Level(v)}
		}},
	}
	for _, tc := range cases {
		for _, period := range []int{2, 7, 20, 61} {
			binary := tc.level == Degraded || tc.name == "minimal buffer"
			if binary && time.Duration(period)*time.Second >= o.level(tc.level).Hold {
				// A condition that is on or off has no band between its
				// thresholds: what keeps it from flapping is the hold
				// time, and an outage longer than that is a real one.
				continue
			}
			now := t0
			m := NewMachine(o, now)
			// Around the entry threshold: ±1 % (one step of the buffer level).
			hi, lo := tc.enter*1.01, tc.enter*0.99
			if tc.level == Degraded || tc.name == "minimal buffer" {
				hi, lo = tc.enter, tc.exit
			}
			osc := func(a, b float64) func(int) Conditions {
				return func(i int) Conditions {
					if (i/period)%2 == 0 {
						return tc.at(a)
					}
					return tc.at(b)
				}
			}
			ch := run(m, &now, 30*time.Minute, osc(hi, lo))
			require.LessOrEqual(t, len(ch), 1, "%s, period %ds, around entry: %v", tc.name, period, ch)
			// Now in the level (or put it there), oscillate around the exit.
			run(m, &now, 2*time.Minute, steady(tc.at(max(hi, tc.enter*1.01))))
			l, _ := m.Level()
			require.Equal(t, tc.level, l, tc.name)
			hi, lo = tc.exit*1.01, tc.exit*0.99
			if tc.level == Degraded || tc.name == "minimal buffer" {
				hi, lo = tc.enter, tc.exit
			}
			ch = run(m, &now, 30*time.Minute, osc(hi, lo))
			for _, c := range ch {
				require.Less(t, c.To, c.From, "%s, period %ds, around exit: went back up: %v", tc.name, period, ch)
			}
			require.LessOrEqual(t, len(ch), 1, "%s, period %ds, around exit: %v", tc.name, period, ch)
		}
	}
}

func TestTriggers(t *testing.T) {
	now := t0
	s := NewTriggers(DefaultOptions.Triggers)
	state := func(metric string) TriggerStatus {
		for _, st := range s.Status() {
			if st.Metric == metric {
				return st
			}
		}
		t.Fatalf("no trigger %s", metric)
		return TriggerStatus{}
	}
	feed := func(v TriggerValues, d time.Duration) {
		for e := time.Duration(0); e < d; e += time.Second {
			now = now.Add(time.Second)
			s.Observe(v, now)
		}
	}
	require.Len(t, s.Status(), 5)
	require.Equal(t, Steady, state("cpu").State)
	feed(TriggerValues{CPU: 0.9, Buffer: 0.75, Queue: 20_000, Memory: 0.5, Latency: 0.05}, 4*time.Minute)
	require.Equal(t, Steady, state("cpu").State, "up before its 5 minutes")
	require.Equal(t, Up, state("buffer").State)
	require.Equal(t, "sync_more_often", state("buffer").Action)
	require.Equal(t, Up, state("queue").State)
	require.Equal(t, Steady, state("memory").State)
	require.Equal(t, Steady, state("latency").State)
	feed(TriggerValues{CPU: 0.9}, 2*time.Minute)
	require.Equal(t, Up, state("cpu").State)
	require.InDelta(t, 0.9, state("cpu").Value, 1e-9)
	require.Equal(t, Down, state("buffer").State)
	// Oscillating between the thresholds changes nothing.
	for i := range 600 {
		v := 0.5
		if i%2 == 0 {
			v = 0.79
		}
		feed(TriggerValues{CPU: v, Buffer: v / 2, Queue: 5000}, time.Second)
	}
	require.Equal(t, Up, state("cpu").State)
	require.Equal(t, Down, state("buffer").State)
	require.Equal(t, Down, state("queue").State) // it was below 1 K before
	feed(TriggerValues{CPU: 0.1}, 29*time.Minute)
	require.Equal(t, Up, state("cpu").State, "down before its 30 minutes")
	feed(TriggerValues{CPU: 0.1}, 2*time.Minute)
	require.Equal(t, Down, state("cpu").State)
}

func TestGate(t *testing.T) {
	g := NewGate(func(s string) string {
		if s == "crit" {
			return "critical"
		}
		return "normal"
	})
	count := func(stream string) map[string]int {
		out := map[string]int{}
		for range 100 {
			out[g.Admit(stream)]++
		}
		return out
	}
	for _, l := range []Level{Normal, Degraded} {
		g.SetLevel(l)
		require.Equal(t, map[string]int{"": 100}, count("s"))
	}
	g.SetLevel(Limited)
	require.Equal(t, map[string]int{"": 50, pressure.Sampled: 50}, count("s"))
	require.Equal(t, map[string]int{"": 100}, count("crit"))
	for _, l := range []Level{Minimal, Emergency} {
		g.SetLevel(l)
		require.Equal(t, map[string]int{pressure.Refused: 100}, count("s"))
		require.Equal(t, map[string]int{"": 100}, count("crit"))
	}
}

func TestValidate(t *testing.T) {
	require.NoError(t, DefaultOptions.Validate())
	o := DefaultOptions
	o.Limited.CPUExit = 0.9
	require.ErrorContains(t, o.Validate(), "limited.cpu_exit")
	o = DefaultOptions
	o.Triggers.Memory.Down = 0.9
	require.ErrorContains(t, o.Validate(), "triggers.memory")
	o = DefaultOptions
	o.Limited = LevelOptions{CPU: 0.01, CPUExit: 0.005}
	require.NoError(t, o.Validate())
}

func TestLevelText(t *testing.T) {
	for l := Normal; l <= Emergency; l++ {
		b, err := l.MarshalText()
		require.NoError(t, err)
		var back Level
		require.NoError(t, back.UnmarshalText(b))
		require.Equal(t, l, back)
	}
	var l Level
	require.Error(t, l.UnmarshalText([]byte("calm")))
}
