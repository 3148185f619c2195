// Package degrade computes the node's degradation level — normal, degraded,
// limited, minimal, emergency (DESIGN §7, the seed's degradation levels) —
// from measured conditions, and the seed's scaling triggers. It is pure: the
// caller measures, feeds a Conditions once in a while, and acts on the level
// and on the feature matrix row (Row) it reports.
//
// A level never flaps. Each level above normal has an entry condition and an
// exit condition with lower thresholds: it is entered once its entry
// condition has held for EnterAfter, and left once its exit condition has
// held for Hold. Between the two thresholds a level stays as it is. The
// level in force is the highest level entered.
package degrade

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// Level is a degradation level; higher is worse.
type Level int

const (
	Normal    Level = iota
	Degraded        // a cloud sink offline: local-only operation
	Limited         // high load: sampling
	Minimal         // resource exhaustion: critical streams only
	Emergency       // near failure
)

var names = [...]string{"normal", "degraded", "limited", "minimal", "emergency"}

func (l Level) String() string {
	if l >= Normal && l <= Emergency {
		return names[l]
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// MarshalText makes a Level read as its name in JSON.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a Level by its name.
func (l *Level) UnmarshalText(b []byte) error {
	for i, n := range names {
		if n == string(b) {
			*l = Level(i)
			return nil
		}
	}
	return fmt.Errorf("unknown degradation level %q", b)
}

// Conditions are what the level is computed from, measured by the caller.
type Conditions struct {
	// SinksOffline names the cloud sinks that are offline.
	SinksOffline []string
	// CPU is the node's CPU use as a share of the machine's cores (0–1).
	CPU float64
	// Memory is the node's memory use as a share of its limit (0–1).
	Memory float64
	// AckP99 is the 99th percentile of ingest's acknowledgement latency,
	// lately; 0 with no acknowledgements.
	AckP99 time.Duration
	// Queue is the processing queue: records in the log not yet processed.
	Queue uint64
	// Buffer is the buffer's pressure level; BufferFailed says it failed.
	Buffer       pressure.Level
	BufferFailed bool
}

// Status is the level in force, as GET /v1/status shows it (DESIGN §7).
type Status struct {
	Level Level  `json:"level"`
	Since string `json:"since"`
	// Reasons say, for each level entered (the worst first), what made
	// the node enter it.
	Reasons  []string `json:"reasons"`
	Features Features `json:"features"`
}

// Change is a change of the level in force.
type Change struct {
	From, To Level
	At       time.Time
	Reasons  []string
}

// levelState follows one level's entry and exit conditions.
type levelState struct {
	on         bool
	aboveSince time.Time // entry condition holding since; zero if not
	clearSince time.Time // exit condition holding since; zero if not
	reasons    []string  // why it was entered
}

// Machine holds the level in force. It is not safe for concurrent use.
type Machine struct {
	o      Options
	states [Emergency + 1]levelState // by level; Normal unused
	level  Level
	since  time.Time
}

// NewMachine starts at Normal.
func NewMachine(o Options, now time.Time) *Machine {
	return &Machine{o: o, since: now}
}

// Level returns the level in force and since when.
func (m *Machine) Level() (Level, time.Time) { return m.level, m.since }

// Status returns the level in force, its reasons and its feature row.
func (m *Machine) Status() Status {
	s := Status{Level: m.level, Since: m.since.UTC().Format(time.RFC3339), Reasons: []string{}, Features: Row(m.level)}
	for l := Emergency; l > Normal; l-- {
		if m.states[l].on {
			for _, r := range m.states[l].reasons {
				s.Reasons = append(s.Reasons, l.String()+": "+r)
			}
		}
	}
	return s
}

// Observe feeds the conditions measured at now and returns the change of
// the level in force it caused, if any.
func (m *Machine) Observe(c Conditions, now time.Time) (Change, bool) {
	for l := Degraded; l <= Emergency; l++ {
		st := &m.states[l]
		above := m.enter(l, c)
		if !st.on {
			st.clearSince = time.Time{}
			if len(above) == 0 {
				st.aboveSince = time.Time{}
				continue
			}
			if st.aboveSince.IsZero() {
				st.aboveSince = now
			}
			if now.Sub(st.aboveSince) >= m.o.level(l).EnterAfter {
				st.on, st.reasons, st.aboveSince = true, above, time.Time{}
			}
			continue
		}
		if !m.clear(l, c) {
			st.clearSince = time.Time{}
			if len(above) > 0 {
				st.reasons = above // the causes as of now
			}
			continue
		}
		if st.clearSince.IsZero() {
			st.clearSince = now
		}
		if now.Sub(st.clearSince) >= m.o.level(l).Hold {
			st.on, st.reasons, st.clearSince = false, nil, time.Time{}
		}
	}
	next := Normal
	for l := Emergency; l > Normal; l-- {
		if m.states[l].on {
			next = l
			break
		}
	}
	if next == m.level {
		return Change{}, false
	}
	ch := Change{From: m.level, To: next, At: now}
	m.level, m.since = next, now
	ch.Reasons = m.Status().Reasons
	return ch, true
}

// enter returns why level l's entry condition holds, nothing if it does not.
func (m *Machine) enter(l Level, c Conditions) []string {
	var why []string
	switch l {
	case Degraded:
		if len(c.SinksOffline) > 0 {
			s := slices.Clone(c.SinksOffline)
			slices.Sort(s)
			why = append(why, "sink offline: "+strings.Join(s, ", "))
		}
	case Minimal:
		if c.Buffer >= pressure.Critical && !c.BufferFailed {
			why = append(why, "buffer pressure "+c.Buffer.String())
		}
	case Emergency:
		switch {
		case c.BufferFailed:
			why = append(why, "buffer failed")
		case c.Buffer >= pressure.Emergency:
			why = append(why, "buffer pressure "+c.Buffer.String())
		}
	}
	t := m.o.level(l)
	if t.CPU > 0 && c.CPU > t.CPU {
		why = append(why, fmt.Sprintf("cpu %s > %s", pct(c.CPU), pct(t.CPU)))
	}
	if t.Memory > 0 && c.Memory > t.Memory {
		why = append(why, fmt.Sprintf("memory %s > %s", pct(c.Memory), pct(t.Memory)))
	}
	if t.AckP99 > 0 && c.AckP99 > t.AckP99 {
		why = append(why, fmt.Sprintf("ack p99 %v > %v", c.AckP99.Round(time.Millisecond), t.AckP99))
	}
	if t.Queue > 0 && c.Queue > t.Queue {
		why = append(why, fmt.Sprintf("processing queue %d > %d records", c.Queue, t.Queue))
	}
	return why
}

// clear reports whether level l's exit condition holds: every figure below
// its exit threshold.
func (m *Machine) clear(l Level, c Conditions) bool {
	switch l {
	case Degraded:
		if len(c.SinksOffline) > 0 {
			return false
		}
	case Minimal:
		if c.Buffer >= pressure.Critical {
			return false
		}
	case Emergency:
		if c.BufferFailed || c.Buffer >= pressure.Emergency {
			return false
		}
	}
	t := m.o.level(l)
	return (t.CPU <= 0 || c.CPU < t.CPUExit) &&
		(t.Memory <= 0 || c.Memory < t.MemoryExit) &&
		(t.AckP99 <= 0 || c.AckP99 < t.AckP99Exit) &&
		(t.Queue <= 0 || c.Queue < t.QueueExit)
}

func pct(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }
