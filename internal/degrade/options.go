package degrade

import (
	"embed"
	"fmt"
	"time"
)

// Source is this package's Go source. The config reference (`holdfast config
// reference`, docs/CONFIG.md) takes the doc comments of the config keys
// defined here from it.
//
//go:embed *.go
var Source embed.FS

// Options are the degradation levels' thresholds and the scaling triggers
// (the `degradation:` config section).
type Options struct {
	// Degraded is entered when a cloud sink is offline, left once every
	// sink has been back for its hold time (its thresholds are unused).
	Degraded LevelOptions `yaml:"degraded"`
	// Limited (high load): ingest samples 50 % of non-critical streams.
	Limited LevelOptions `yaml:"limited"`
	// Minimal (resource exhaustion, and always at buffer pressure
	// critical): only critical streams are taken in.
	Minimal LevelOptions `yaml:"minimal"`
	// Emergency (near failure, and always at buffer pressure emergency or
	// full, or a failed buffer): only critical streams are taken in.
	Emergency LevelOptions `yaml:"emergency"`
	// Triggers are the seed's scaling triggers, shown in status and metrics.
	Triggers Triggers `yaml:"triggers"`
	// LimitedWindows are the window sizes whose results are written live
	// at limited (the matrix's "5m, 1h only"); the others are held back and
	// written on the step down. Sizes not in windows.sizes are ignored.
	LimitedWindows []time.Duration `yaml:"limited_windows"`
	// FastPathShare is the share (0–1) of one core's time that background
	// work (the processor's reader and workers, the cloud sync of every lane
	// but the critical one) may take in all while the latency trigger is up:
	// the trigger's action, "critical streams and acks first". Their time is
	// wall time, which on a saturated machine exceeds the CPU they use.
	FastPathShare float64 `yaml:"fast_path_share"`
	// SpillWindowState is the memory trigger's action: while the trigger
	// is up, each processing worker moves the window state of the streams
	// that had no record since its previous pass (a pass every tenth of
	// windows.idle_timeout, at least 100 ms) to a file in the spill
	// directory of data_dir, and loads a stream back when it gets an event
	// or a window of it is due to close; once the trigger is down, it loads
	// them all back. false leaves the trigger reported only.
	SpillWindowState bool `yaml:"spill_window_state"`
}

// LevelOptions are one level's entry and exit thresholds: it is entered once
// any figure has been above its entry threshold for enter_after, and left
// once every figure has been below its exit threshold for hold. A zero entry
// threshold leaves that figure out of the level.
type LevelOptions struct {
	// CPU is the node's CPU use (0–1 of the machine's cores) above which
	// the level is entered; CPUExit the use below which it may be left.
	CPU     float64 `yaml:"cpu"`
	CPUExit float64 `yaml:"cpu_exit"`
	// Memory is the node's memory use (0–1 of its limit: GOMEMLIMIT, the
	// cgroup's memory.max or the machine's RAM, the lowest) above which the
	// level is entered; MemoryExit the use below which it may be left.
	Memory     float64 `yaml:"memory"`
	MemoryExit float64 `yaml:"memory_exit"`
	// AckP99 is the 99th percentile of ingest's acknowledgement latency
	// above which the level is entered; AckP99Exit below which it may be left.
	AckP99     time.Duration `yaml:"ack_p99"`
	AckP99Exit time.Duration `yaml:"ack_p99_exit"`
	// Queue is the processing queue (records not yet processed) above
	// which the level is entered; QueueExit below which it may be left.
	Queue     uint64 `yaml:"queue"`
	QueueExit uint64 `yaml:"queue_exit"`
	// EnterAfter is how long the entry condition must hold before the
	// level is entered.
	EnterAfter time.Duration `yaml:"enter_after"`
	// Hold is how long the exit condition must hold before the level is left.
	Hold time.Duration `yaml:"hold"`
}

// Triggers are the seed's scaling triggers (docs/OPERATIONS.md).
type Triggers struct {
	CPU     TriggerOptions `yaml:"cpu"`     // CPU use, 0–1 of the machine's cores
	Buffer  TriggerOptions `yaml:"buffer"`  // buffer utilisation, 0–1 of its capacity
	Queue   TriggerOptions `yaml:"queue"`   // processing queue, records
	Memory  TriggerOptions `yaml:"memory"`  // memory use, 0–1 of the limit
	Latency TriggerOptions `yaml:"latency"` // p99 ingest ack latency, seconds
}

// TriggerOptions are a trigger's thresholds: its state goes up once the
// figure has been above Up for UpFor, down once it has been below Down for
// DownFor, and stays as it is in between.
type TriggerOptions struct {
	Up      float64       `yaml:"up"`       // the figure above which the trigger goes up
	Down    float64       `yaml:"down"`     // the figure below which it goes down
	UpFor   time.Duration `yaml:"up_for"`   // how long above up before it goes up
	DownFor time.Duration `yaml:"down_for"` // how long below down before it goes down
}

// DefaultOptions: the entry thresholds are the seed's (CPU 80 %, p99 100 ms,
// queue 10 K for limited; memory 85 % for minimal, 95 % for emergency); the
// exit thresholds and hold times, which the seed leaves open, sit well below
// them so that a node does not come back to a level it just left. The
// triggers are the seed's table: CPU > 80 % for 5 min / < 30 % for 30 min,
// buffer > 70 % / < 20 %, queue > 10 K / < 1 K, memory > 85 % / < 50 %,
// p99 latency > 100 ms / < 20 ms.
var DefaultOptions = Options{
	Degraded: LevelOptions{Hold: 30 * time.Second},
	Limited: LevelOptions{
		CPU: 0.80, CPUExit: 0.60, AckP99: 100 * time.Millisecond, AckP99Exit: 50 * time.Millisecond,
		Queue: 10_000, QueueExit: 1_000, EnterAfter: 30 * time.Second, Hold: 2 * time.Minute,
	},
	Minimal:          LevelOptions{Memory: 0.85, MemoryExit: 0.75, EnterAfter: 10 * time.Second, Hold: 2 * time.Minute},
	Emergency:        LevelOptions{Memory: 0.95, MemoryExit: 0.90, Hold: time.Minute},
	LimitedWindows:   []time.Duration{5 * time.Minute, time.Hour},
	FastPathShare:    0.10,
	SpillWindowState: true,
	Triggers: Triggers{
		CPU:     TriggerOptions{Up: 0.80, Down: 0.30, UpFor: 5 * time.Minute, DownFor: 30 * time.Minute},
		Buffer:  TriggerOptions{Up: 0.70, Down: 0.20},
		Queue:   TriggerOptions{Up: 10_000, Down: 1_000},
		Memory:  TriggerOptions{Up: 0.85, Down: 0.50},
		Latency: TriggerOptions{Up: 0.100, Down: 0.020},
	},
}

func (o Options) level(l Level) LevelOptions {
	switch l {
	case Degraded:
		return o.Degraded
	case Limited:
		return o.Limited
	case Minimal:
		return o.Minimal
	case Emergency:
		return o.Emergency
	}
	return LevelOptions{}
}

// Validate reports thresholds that cannot work, each with its key.
func (o Options) Validate() error {
	if !(o.FastPathShare > 0 && o.FastPathShare <= 1) {
		return fmt.Errorf("fast_path_share %v must be above 0 and at most 1", o.FastPathShare)
	}
	for l := Degraded; l <= Emergency; l++ {
		t := o.level(l)
		check := func(key string, enter, exit float64) error {
			if enter < 0 || (enter > 0 && !(exit > 0 && exit < enter)) {
				return fmt.Errorf("%s.%s_exit %v must be above 0 and below %s.%s %v", l, key, exit, l, key, enter)
			}
			return nil
		}
		for _, err := range []error{
			check("cpu", t.CPU, t.CPUExit), check("memory", t.Memory, t.MemoryExit),
			check("ack_p99", t.AckP99.Seconds(), t.AckP99Exit.Seconds()), check("queue", float64(t.Queue), float64(t.QueueExit)),
		} {
			if err != nil {
				return err
			}
		}
		if t.EnterAfter < 0 || t.Hold < 0 {
			return fmt.Errorf("%s.enter_after and %s.hold must not be negative", l, l)
		}
	}
	for _, tr := range o.Triggers.list() {
		if !(tr.o.Down < tr.o.Up) || tr.o.UpFor < 0 || tr.o.DownFor < 0 {
			return fmt.Errorf("triggers.%s: down %v must be below up %v, durations not negative", tr.metric, tr.o.Down, tr.o.Up)
		}
	}
	return nil
}
