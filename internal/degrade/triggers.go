package degrade

import "time"

// Trigger states.
const (
	Steady = "steady"
	Up     = "up"
	Down   = "down"
)

// Trigger actions, by metric: what the seed's table says to do when a
// trigger goes up or down (docs/OPERATIONS.md says which are built).
var actions = map[string]string{
	"cpu":     "scale_processing_workers",
	"buffer":  "sync_more_often",
	"queue":   "add_parallel_processors",
	"memory":  "spill_window_state",
	"latency": "prioritize_fast_path",
}

// TriggerStatus is one trigger as GET /v1/status shows it (DESIGN §7).
type TriggerStatus struct {
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
	State  string  `json:"state"`
	Action string  `json:"action"`
}

type namedTrigger struct {
	metric string
	o      TriggerOptions
}

func (t Triggers) list() []namedTrigger {
	return []namedTrigger{{"cpu", t.CPU}, {"buffer", t.Buffer}, {"queue", t.Queue}, {"memory", t.Memory}, {"latency", t.Latency}}
}

// TriggerValues are the triggers' figures, measured by the caller.
type TriggerValues struct {
	CPU, Buffer, Queue, Memory, Latency float64
}

func (v TriggerValues) get(metric string) float64 {
	switch metric {
	case "cpu":
		return v.CPU
	case "buffer":
		return v.Buffer
	case "queue":
		return v.Queue
	case "memory":
		return v.Memory
	}
	return v.Latency
}

// TriggerSet follows the seed's scaling triggers. Each starts steady, goes
// up once its figure has been above its up threshold for its up time, down
// once below its down threshold for its down time, and otherwise keeps its
// state: between the thresholds nothing changes, so it does not flap. It is
// not safe for concurrent use.
type TriggerSet struct {
	ts []triggerState
}

type triggerState struct {
	namedTrigger
	value                float64
	state                string
	aboveSince, belowSet time.Time
}

// NewTriggers returns the triggers of t, every one steady.
func NewTriggers(t Triggers) *TriggerSet {
	s := &TriggerSet{}
	for _, nt := range t.list() {
		s.ts = append(s.ts, triggerState{namedTrigger: nt, state: Steady})
	}
	return s
}

// Observe feeds the figures measured at now.
func (s *TriggerSet) Observe(v TriggerValues, now time.Time) {
	for i := range s.ts {
		t := &s.ts[i]
		t.value = v.get(t.metric)
		if t.value > t.o.Up {
			if t.aboveSince.IsZero() {
				t.aboveSince = now
			}
			if now.Sub(t.aboveSince) >= t.o.UpFor {
				t.state = Up
			}
		} else {
			t.aboveSince = time.Time{}
		}
		if t.value < t.o.Down {
			if t.belowSet.IsZero() {
				t.belowSet = now
			}
			if now.Sub(t.belowSet) >= t.o.DownFor {
				t.state = Down
			}
		} else {
			t.belowSet = time.Time{}
		}
	}
}

// Status returns each trigger's figure, state and action, in the seed's order.
func (s *TriggerSet) Status() []TriggerStatus {
	out := make([]TriggerStatus, 0, len(s.ts))
	for _, t := range s.ts {
		out = append(out, TriggerStatus{Metric: t.metric, Value: t.value, State: t.state, Action: actions[t.metric]})
	}
	return out
}
