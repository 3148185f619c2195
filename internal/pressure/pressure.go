// Package pressure tracks how full the buffer is as one of the seed's levels —
// normal, warning (70 %), critical (85 %), emergency (95 %), full (100 %) — with
// hysteresis, so that a buffer hovering at a threshold does not flap. Levels
// rise at once and fall only once utilisation is a margin below the threshold.
// It is pure: the caller feeds it utilisation and acts on the changes it reports.
package pressure

import (
	"fmt"
	"time"
)

// Level is a buffer pressure level; higher is worse.
type Level int

const (
	Normal Level = iota
	Warning
	Critical
	Emergency
	Full
)

var names = [...]string{"normal", "warning", "critical", "emergency", "full"}

func (l Level) String() string {
	if l >= Normal && l <= Full {
		return names[l]
	}
	return fmt.Sprintf("level(%d)", int(l))
}

// MarshalText makes a Level read as its name in JSON.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// Thresholds are the utilisations (0–1) at which each level starts, and the
// margin below a threshold at which it clears.
type Thresholds struct {
	Warning    float64 `yaml:"warning"`
	Critical   float64 `yaml:"critical"`
	Emergency  float64 `yaml:"emergency"`
	Full       float64 `yaml:"full"`
	Hysteresis float64 `yaml:"hysteresis"`

	// What the emergency and full levels do (plan.go): from emergency on,
	// pending low-priority events received more than DownsampleAfter ago
	// keep one in DownsampleRatio per stream and device; at full, the oldest
	// DropFraction of the pending records are dropped.
	DownsampleAfter time.Duration `yaml:"downsample_after"`
	DownsampleRatio int           `yaml:"downsample_ratio"`
	DropFraction    float64       `yaml:"drop_fraction"`
}

// DefaultThresholds are the seed's: 70/85/95/100 %, clearing 5 points lower;
// downsampling 10:1, dropping 10 %. What counts as old for downsampling the
// seed leaves open: events received more than 15 minutes ago.
var DefaultThresholds = Thresholds{
	Warning: 0.70, Critical: 0.85, Emergency: 0.95, Full: 1.00, Hysteresis: 0.05,
	DownsampleAfter: 15 * time.Minute, DownsampleRatio: 10, DropFraction: 0.10,
}

// Validate reports thresholds that cannot work.
func (t Thresholds) Validate() error {
	if !(0 < t.Warning && t.Warning < t.Critical && t.Critical < t.Emergency && t.Emergency < t.Full && t.Full <= 1) {
		return fmt.Errorf("pressure thresholds must rise strictly within (0, 1]: warning %v, critical %v, emergency %v, full %v",
			t.Warning, t.Critical, t.Emergency, t.Full)
	}
	if t.Hysteresis < 0 || t.Hysteresis >= t.Warning {
		return fmt.Errorf("pressure hysteresis %v must be at least 0 and below the warning threshold %v", t.Hysteresis, t.Warning)
	}
	if t.DownsampleAfter < 0 {
		return fmt.Errorf("pressure downsample_after %v must not be negative", t.DownsampleAfter)
	}
	if t.DownsampleRatio < 2 {
		return fmt.Errorf("pressure downsample_ratio %d must be at least 2 (keep one event in that many)", t.DownsampleRatio)
	}
	if !(t.DropFraction > 0 && t.DropFraction <= 1) {
		return fmt.Errorf("pressure drop_fraction %v must be in (0, 1]", t.DropFraction)
	}
	return nil
}

// Start is the utilisation at which level l starts (0 for Normal).
func (t Thresholds) Start(l Level) float64 {
	switch l {
	case Warning:
		return t.Warning
	case Critical:
		return t.Critical
	case Emergency:
		return t.Emergency
	case Full:
		return t.Full
	}
	return 0
}

// Change is a level change.
type Change struct {
	From, To    Level
	Utilisation float64
	At          time.Time
}

// Monitor holds the current level.
type Monitor struct {
	t     Thresholds
	level Level
	since time.Time
}

// NewMonitor starts at Normal.
func NewMonitor(t Thresholds, now time.Time) *Monitor {
	return &Monitor{t: t, since: now}
}

// Thresholds returns the monitor's thresholds.
func (m *Monitor) Thresholds() Thresholds { return m.t }

// Level returns the current level and since when it holds.
func (m *Monitor) Level() (Level, time.Time) { return m.level, m.since }

// Observe feeds the utilisation u (stored bytes / allowed bytes) and returns
// the change it caused, if any. A level rises as soon as u reaches its
// threshold, several levels at once if need be; it falls to the highest level
// whose threshold minus the hysteresis u still reaches.
func (m *Monitor) Observe(u float64, now time.Time) (Change, bool) {
	next := m.level
	for next < Full && u >= m.t.Start(next+1) {
		next++
	}
	if next == m.level {
		for next > Normal && u < m.t.Start(next)-m.t.Hysteresis {
			next--
		}
	}
	if next == m.level {
		return Change{}, false
	}
	c := Change{From: m.level, To: next, Utilisation: u, At: now}
	m.level, m.since = next, now
	return c, true
}
