package alert

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"
)

// WindowInput is a closed window result as the rule engine sees it. DeviceID ""
// is the stream's site-wide window.
type WindowInput struct {
	Stream, DeviceID          string
	Size                      time.Duration
	End                       int64 // Unix ms
	Count                     uint64
	Sum, Min, Max, Mean, Last float64
	P50, P95, P99             float64
}

// Engine evaluates rules. It is not safe for concurrent use: the processor runs
// one per worker goroutine, each owning whole streams.
//
// Per key — (rule, device), or (rule) for a site-wide window rule — the engine
// is OK, pending (the condition has held for a run of consecutive inputs that
// does not yet meet for_count and for_duration) or firing. Inputs are taken in
// call order; an input older than the key's previous one is not special.
type Engine struct {
	rules   []compiled       // in configured order
	byName  map[string]int   // rule name → index in rules
	events  map[string][]int // stream → indexes of event-source rules, ascending
	windows map[string][]int // stream → indexes of window-source rules, ascending
	keys    map[key]keyState // pending and firing keys only; OK keys are absent

	// The event rules of the stream seen last: consecutive events of one
	// stream are the common case and skip the map lookup.
	lastStream string
	lastRules  []int
}

type compiled struct {
	Rule               // with defaults
	needMS      int64  // for_duration in whole ms, rounded up
	fingerprint string // changes when the rule's definition does
	tracked     int    // keys of this rule in Engine.keys (pending or firing)
	op          opCode // Op, decoded once
}

// opCode is a comparison, decoded from Rule.Op once so that the per-input
// check is a switch on an integer.
type opCode uint8

const (
	opGT opCode = iota
	opGE
	opLT
	opLE
	opEQ
	opNE
)

func decodeOp(op string) opCode {
	switch op {
	case ">":
		return opGT
	case ">=":
		return opGE
	case "<":
		return opLT
	case "<=":
		return opLE
	case "==":
		return opEQ
	case "!=":
		return opNE
	}
	panic(fmt.Sprintf("alert: op %q passed validation", op))
}

type key struct {
	rule   int
	device string // "" for site-wide
}

type keyState struct {
	run    int   // consecutive true inputs, at most the rule's for_count
	since  int64 // time of the run's first input
	firing bool
	alert  Alert // while firing: the firing alert
}

// NewEngine validates the rules and returns an engine with every key OK.
func NewEngine(rules []Rule) (*Engine, error) {
	if err := ValidateRules(rules); err != nil {
		return nil, err
	}
	e := &Engine{
		rules:   make([]compiled, len(rules)),
		byName:  make(map[string]int, len(rules)),
		events:  make(map[string][]int),
		windows: make(map[string][]int),
		keys:    make(map[key]keyState),
	}
	for i, r := range rules {
		r = r.WithDefaults()
		e.rules[i] = compiled{
			Rule:        r,
			needMS:      int64((r.ForDuration + time.Millisecond - 1) / time.Millisecond),
			fingerprint: fingerprint(r),
			op:          decodeOp(r.Op),
		}
		e.byName[r.Name] = i
		if r.Source == SourceWindow {
			e.windows[r.Stream] = append(e.windows[r.Stream], i)
		} else {
			e.events[r.Stream] = append(e.events[r.Stream], i)
		}
	}
	return e, nil
}

// OnEvent evaluates the event-source rules of stream for one raw event. It
// returns the alerts that fired or resolved, in rule order; usually none (nil).
func (e *Engine) OnEvent(stream, deviceID string, ts int64, value float64) []Alert {
	return e.OnEventOf("", stream, deviceID, ts, value)
}

// OnEventOf is OnEvent for the rules of one severity only ("" for all): the
// others neither see the event nor change state.
func (e *Engine) OnEventOf(sev Severity, stream, deviceID string, ts int64, value float64) []Alert {
	if stream != e.lastStream || e.lastRules == nil {
		e.lastStream, e.lastRules = stream, e.events[stream]
		if e.lastRules == nil {
			e.lastRules = []int{} // remembered as "none", not looked up again
		}
	}
	var out []Alert
	for _, i := range e.lastRules {
		r := &e.rules[i]
		if sev != "" && r.Severity != sev {
			continue
		}
		if r.tracked == 0 && !holds(r.op, value, r.Threshold) {
			continue // the common case: nothing pending, condition false
		}
		if r.DeviceID != "" && r.DeviceID != deviceID {
			continue
		}
		if a, ok := e.eval(i, deviceID, ts, value); ok {
			out = append(out, a)
		}
	}
	return out
}

// OnWindow evaluates the window-source rules of w's stream and size for one
// closed window: site-wide rules for a site-wide window, the others for a
// device's window. A window with no events is an input only to count rules. It
// returns the alerts that fired or resolved, in rule order; usually none (nil).
func (e *Engine) OnWindow(w WindowInput) []Alert {
	var out []Alert
	siteWide := w.DeviceID == ""
	for _, i := range e.windows[w.Stream] {
		r := &e.rules[i]
		if r.Window != w.Size || r.SiteWide != siteWide || (r.DeviceID != "" && r.DeviceID != w.DeviceID) {
			continue
		}
		if w.Count == 0 && r.Aggregate != "count" {
			continue
		}
		if a, ok := e.eval(i, w.DeviceID, w.End, aggregate(w, r.Aggregate)); ok {
			out = append(out, a)
		}
	}
	return out
}

func aggregate(w WindowInput, name string) float64 {
	switch name {
	case "count":
		return float64(w.Count)
	case "sum":
		return w.Sum
	case "min":
		return w.Min
	case "max":
		return w.Max
	case "last":
		return w.Last
	case "p50":
		return w.P50
	case "p95":
		return w.P95
	case "p99":
		return w.P99
	case "mean":
		return w.Mean
	}
	panic(fmt.Sprintf("alert: aggregate %q passed validation", name))
}

// eval feeds one input to the key (rule i, device) and returns the alert if the
// key fired or resolved.
func (e *Engine) eval(i int, device string, ts int64, v float64) (Alert, bool) {
	r := &e.rules[i]
	ok := holds(r.op, v, r.Threshold)
	if !ok && r.tracked == 0 {
		return Alert{}, false // the common case: nothing pending, nothing to look up
	}
	k := key{rule: i, device: device}
	st, tracked := e.keys[k]
	if !ok {
		if !tracked {
			return Alert{}, false
		}
		delete(e.keys, k) // back to OK: a pending run resets, a firing key resolves
		r.tracked--
		if !st.firing {
			return Alert{}, false
		}
		a := st.alert
		a.State, a.Value, a.ResolvedAt = Resolved, v, ts
		return a, true
	}
	if st.firing {
		return Alert{}, false // repeats are suppressed until the condition clears
	}
	if !tracked {
		st.since = ts
	}
	if st.run < r.ForCount {
		st.run++
	}
	// Without for_duration the run's span is not checked: event times may be
	// out of order, and a span "below zero" must not hold back a fire.
	if !tracked {
		r.tracked++
	}
	if st.run < r.ForCount || r.needMS > 0 && ts-st.since < r.needMS {
		e.keys[k] = st
		return Alert{}, false
	}
	st.firing = true
	st.alert = Alert{
		ID:        alertID(r.Name, device, ts),
		Rule:      r.Name,
		Severity:  r.Severity,
		State:     Firing,
		Stream:    r.Stream,
		DeviceID:  device,
		Value:     v,
		Threshold: r.Threshold,
		FiredAt:   ts,
	}
	e.keys[k] = st
	return st.alert, true
}

func holds(op opCode, v, threshold float64) bool {
	switch op {
	case opGT:
		return v > threshold
	case opGE:
		return v >= threshold
	case opLT:
		return v < threshold
	case opLE:
		return v <= threshold
	case opEQ:
		return v == threshold
	default:
		return v != threshold
	}
}

func alertID(rule, device string, firedAt int64) string {
	if device == "" {
		device = "*"
	}
	return rule + "/" + device + "/" + strconv.FormatInt(firedAt, 10)
}

// Active returns the firing alerts, sorted by ID.
func (e *Engine) Active() []Alert {
	var out []Alert
	for _, st := range e.keys {
		if st.firing {
			out = append(out, st.alert)
		}
	}
	slices.SortFunc(out, func(a, b Alert) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// EngineState is an engine's evaluation state: every pending or firing key. It
// encodes to JSON for checkpoints.
type EngineState struct {
	Keys []KeyState `json:"keys"`
}

// KeyState is the state of one pending or firing key.
type KeyState struct {
	Rule        string `json:"rule"`
	Fingerprint string `json:"fingerprint"` // of the rule's definition
	DeviceID    string `json:"device_id,omitempty"`
	Run         int    `json:"run"`              // consecutive true inputs
	Since       int64  `json:"since"`            // Unix ms of the run's first input
	Firing      *Alert `json:"firing,omitempty"` // the firing alert, if firing
}

// State returns the evaluation state, in rule order and then by device, for a
// checkpoint. An engine restored from it continues exactly as this one would.
func (e *Engine) State() EngineState {
	s := EngineState{Keys: make([]KeyState, 0, len(e.keys))}
	ks := make([]key, 0, len(e.keys))
	for k := range e.keys {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b key) int {
		return cmp.Or(cmp.Compare(a.rule, b.rule), cmp.Compare(a.device, b.device))
	})
	for _, k := range ks {
		st := e.keys[k]
		r := &e.rules[k.rule]
		ks := KeyState{Rule: r.Name, Fingerprint: r.fingerprint, DeviceID: k.device, Run: st.run, Since: st.since}
		if st.firing {
			a := st.alert
			ks.Firing = &a
		}
		s.Keys = append(s.Keys, ks)
	}
	return s
}

// Restore replaces the evaluation state with s. Keys of rules that no longer
// exist or whose definition changed are dropped: such a rule starts with every
// key OK, and an alert it had firing is forgotten rather than resolved. It
// returns how many keys were dropped.
func (e *Engine) Restore(s EngineState) (dropped int) {
	clear(e.keys)
	for i := range e.rules {
		e.rules[i].tracked = 0
	}
	for _, ks := range s.Keys {
		i, ok := e.byName[ks.Rule]
		if !ok || e.rules[i].fingerprint != ks.Fingerprint {
			dropped++
			continue
		}
		st := keyState{run: min(ks.Run, e.rules[i].ForCount), since: ks.Since}
		if ks.Firing != nil {
			st.firing, st.alert = true, *ks.Firing
		}
		k := key{rule: i, device: ks.DeviceID}
		if _, dup := e.keys[k]; !dup {
			e.rules[i].tracked++
		}
		e.keys[k] = st
	}
	return dropped
}

// fingerprint identifies a rule's definition (with defaults): every field that
// decides which inputs a key sees and what it emits.
func fingerprint(r Rule) string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%d\x00%s\x00%t\x00%s\x00%s\x00%d\x00%d\x00%s",
		r.Name, r.Stream, r.DeviceID, r.Source, r.Window, r.Aggregate, r.SiteWide, r.Op,
		strconv.FormatFloat(r.Threshold, 'g', -1, 64), r.ForCount, r.ForDuration, r.Severity)
	return strconv.FormatUint(h.Sum64(), 16)
}
