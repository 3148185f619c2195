package alert

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestEngineScripts runs the scripts in testdata/engine. Each file holds YAML
// rules, a line "----", then commands, each followed by the lines "-> ..." it
// must return and nothing else:
//
//	event <stream> <device> <ts ms> <value>
//	window <stream> <device or * for site-wide> <size> <end ms> [count=N sum=F min=F ...]
//	active
//
// An alert reads "<state> <id> <severity> value=<v> [resolved_at=<ms>]". '#' starts
// a comment line.
func TestEngineScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/engine/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

func runScript(t *testing.T, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rulesText, script, ok := strings.Cut(string(b), "\n----\n")
	if !ok {
		t.Fatalf("%s: no ---- line after the rules", file)
	}
	var rules []Rule
	if err := yaml.Unmarshal([]byte(rulesText), &rules); err != nil {
		t.Fatalf("%s: rules: %v", file, err)
	}
	e, err := NewEngine(rules)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	byName := make(map[string]Rule)
	for _, r := range rules {
		byName[r.Name] = r.WithDefaults()
	}

	lines := strings.Split(script, "\n")
	lineNo := strings.Count(rulesText, "\n") + 2
	for i := 0; i < len(lines); i++ {
		cmd := strings.TrimSpace(lines[i])
		at := fmt.Sprintf("%s:%d", file, lineNo+i+1)
		if cmd == "" || strings.HasPrefix(cmd, "#") {
			continue
		}
		if strings.HasPrefix(cmd, "->") {
			t.Fatalf("%s: expectation without a command: %s", at, cmd)
		}
		var want []string
		for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "->") {
			i++
			want = append(want, strings.TrimSpace(strings.TrimPrefix(lines[i], "->")))
		}
		got, err := runCommand(e, cmd)
		if err != nil {
			t.Fatalf("%s: %s: %v", at, cmd, err)
		}
		var gotLines []string
		for _, a := range got {
			checkAlert(t, at, a, byName)
			gotLines = append(gotLines, formatAlert(a))
		}
		if !reflect.DeepEqual(gotLines, want) {
			t.Errorf("%s: %s\n got: %q\nwant: %q", at, cmd, gotLines, want)
		}
	}
}

func runCommand(e *Engine, cmd string) ([]Alert, error) {
	f := strings.Fields(cmd)
	switch {
	case f[0] == "active" && len(f) == 1:
		return e.Active(), nil
	case f[0] == "event" && len(f) == 5:
		ts, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return nil, err
		}
		v, err := strconv.ParseFloat(f[4], 64)
		if err != nil {
			return nil, err
		}
		return e.OnEvent(f[1], f[2], ts, v), nil
	case f[0] == "window" && len(f) >= 5:
		w := WindowInput{Stream: f[1], DeviceID: f[2]}
		if w.DeviceID == "*" {
			w.DeviceID = ""
		}
		var err error
		if w.Size, err = time.ParseDuration(f[3]); err != nil {
			return nil, err
		}
		if w.End, err = strconv.ParseInt(f[4], 10, 64); err != nil {
			return nil, err
		}
		for _, kv := range f[5:] {
			k, v, _ := strings.Cut(kv, "=")
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", kv, err)
			}
			field := map[string]*float64{"sum": &w.Sum, "min": &w.Min, "max": &w.Max, "mean": &w.Mean,
				"last": &w.Last, "p50": &w.P50, "p95": &w.P95, "p99": &w.P99}[k]
			switch {
			case k == "count":
				w.Count = uint64(x)
			case field != nil:
				*field = x
			default:
				return nil, fmt.Errorf("unknown window field %q", k)
			}
		}
		return e.OnWindow(w), nil
	}
	return nil, fmt.Errorf("unknown command")
}

func formatAlert(a Alert) string {
	s := fmt.Sprintf("%s %s %s value=%g", a.State, a.ID, a.Severity, a.Value)
	if a.ResolvedAt != 0 {
		s += fmt.Sprintf(" resolved_at=%d", a.ResolvedAt)
	}
	return s
}

// checkAlert checks the fields a script line does not show.
func checkAlert(t *testing.T, at string, a Alert, rules map[string]Rule) {
	t.Helper()
	r, ok := rules[a.Rule]
	switch {
	case !ok:
		t.Errorf("%s: alert of unknown rule %q", at, a.Rule)
	case a.ID != alertID(a.Rule, a.DeviceID, a.FiredAt):
		t.Errorf("%s: id %q does not match rule %q, device %q, fired_at %d", at, a.ID, a.Rule, a.DeviceID, a.FiredAt)
	case a.Stream != r.Stream || a.Threshold != r.Threshold || a.Severity != r.Severity:
		t.Errorf("%s: alert %+v does not match its rule %+v", at, a, r)
	case (a.State == Firing) != (a.ResolvedAt == 0):
		t.Errorf("%s: state %s with resolved_at %d", at, a.State, a.ResolvedAt)
	}
}

func TestHolds(t *testing.T) {
	for _, tc := range []struct {
		op      string
		v, thr  float64
		want    bool
		comment string
	}{
		{">", 2, 1, true, ""}, {">", 1, 1, false, ""},
		{">=", 1, 1, true, ""}, {">=", 0.999, 1, false, ""},
		{"<", -1, 0, true, ""}, {"<", 0, 0, false, ""},
		{"<=", 0, 0, true, ""}, {"<=", 0.001, 0, false, ""},
		{"==", 3.5, 3.5, true, ""}, {"==", 3.5000001, 3.5, false, ""},
		{"!=", 3, 4, true, ""}, {"!=", 4, 4, false, ""},
	} {
		if got := holds(decodeOp(tc.op), tc.v, tc.thr); got != tc.want {
			t.Errorf("%g %s %g = %t, want %t", tc.v, tc.op, tc.thr, got, tc.want)
		}
	}
}

func TestRuleValidate(t *testing.T) {
	ok := Rule{Name: "hot", Stream: "temperature", Op: ">", Threshold: 30}
	win := Rule{Name: "w", Stream: "temperature", Source: "window", Window: time.Minute, Op: "<", Threshold: 1}
	for _, tc := range []struct {
		name string
		edit func(r *Rule)
		base Rule
		want string // "" for valid
	}{
		{"minimal event rule", func(r *Rule) {}, ok, ""},
		{"minimal window rule", func(r *Rule) {}, win, ""},
		{"full window rule", func(r *Rule) {
			r.Aggregate, r.SiteWide, r.ForCount, r.ForDuration, r.Severity = "p99", true, 3, time.Minute, Critical
		}, win, ""},
		{"no name", func(r *Rule) { r.Name = "" }, ok, "rule: name is required"},
		{"bad name", func(r *Rule) { r.Name = "too hot" }, ok, `rule "too hot": name must match [A-Za-z0-9_.-]+`},
		{"slash in name", func(r *Rule) { r.Name = "a/b" }, ok, `rule "a/b": name must match [A-Za-z0-9_.-]+`},
		{"no stream", func(r *Rule) { r.Stream = "" }, ok, `rule "hot": stream is required`},
		{"bad op", func(r *Rule) { r.Op = "=>" }, ok, `rule "hot": op "=>" must be one of > >= < <= == !=`},
		{"no op", func(r *Rule) { r.Op = "" }, ok, `rule "hot": op "" must be one of > >= < <= == !=`},
		{"bad source", func(r *Rule) { r.Source = "windows" }, ok, `rule "hot": source "windows" must be event or window`},
		{"window on event rule", func(r *Rule) { r.Window = time.Minute }, ok, `rule "hot": window applies only to source window`},
		{"aggregate on event rule", func(r *Rule) { r.Aggregate = "max" }, ok, `rule "hot": aggregate applies only to source window`},
		{"site_wide on event rule", func(r *Rule) { r.SiteWide = true }, ok, `rule "hot": site_wide applies only to source window`},
		{"window rule without size", func(r *Rule) { r.Window = 0 }, win,
			`rule "w": window is required for source window and must be positive, got 0s`},
		{"bad aggregate", func(r *Rule) { r.Aggregate = "median" }, win,
			`rule "w": aggregate "median" must be one of count sum min max mean last p50 p95 p99`},
		{"site_wide with device", func(r *Rule) { r.SiteWide, r.DeviceID = true, "d1" }, win,
			`rule "w": device_id cannot be set on a site_wide rule`},
		{"NaN threshold", func(r *Rule) { r.Threshold = math.NaN() }, ok, `rule "hot": threshold must be a finite number`},
		{"infinite threshold", func(r *Rule) { r.Threshold = math.Inf(1) }, ok, `rule "hot": threshold must be a finite number`},
		{"negative for_count", func(r *Rule) { r.ForCount = -1 }, ok, `rule "hot": for_count -1 must not be negative`},
		{"negative for_duration", func(r *Rule) { r.ForDuration = -time.Second }, ok,
			`rule "hot": for_duration -1s must not be negative`},
		{"bad severity", func(r *Rule) { r.Severity = "urgent" }, ok,
			`rule "hot": severity "urgent" must be one of info warning critical`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.base
			tc.edit(&r)
			err := r.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("error %v, want %s", err, tc.want)
			}
		})
	}
}

func TestValidateRules(t *testing.T) {
	rules := []Rule{
		{Name: "hot", Stream: "t", Op: ">", Threshold: 1},
		{Stream: "t", Op: ">"},
		{Name: "hot", Stream: "t", Op: "<", Threshold: 1},
		{Name: "cold", Stream: "t", Op: "~"},
	}
	err := ValidateRules(rules)
	want := `rule #2: name is required
rule "hot": name is used by rules #1 and #3
rule "cold": op "~" must be one of > >= < <= == !=`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if _, err := NewEngine(rules); err == nil {
		t.Fatal("NewEngine accepted invalid rules")
	}
	if err := ValidateRules(rules[:1]); err != nil {
		t.Fatal(err)
	}
}

func TestRuleYAML(t *testing.T) {
	var r Rule
	src := `{name: vib, stream: vibration, device_id: m1, source: window, window: 5m, aggregate: p95,
	         op: ">=", threshold: 4.5, for_count: 2, for_duration: 90s, severity: critical}`
	if err := yaml.Unmarshal([]byte(src), &r); err != nil {
		t.Fatal(err)
	}
	want := Rule{Name: "vib", Stream: "vibration", DeviceID: "m1", Source: "window", Window: 5 * time.Minute,
		Aggregate: "p95", Op: ">=", Threshold: 4.5, ForCount: 2, ForDuration: 90 * time.Second, Severity: Critical}
	if r != want {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
}

// randomRules and randomInputs make a workload that exercises every path.
func randomRules() []Rule {
	return []Rule{
		{Name: "e1", Stream: "a", Op: ">", Threshold: 5},
		{Name: "e2", Stream: "a", Op: "<=", Threshold: 3, ForCount: 3, Severity: Critical},
		{Name: "e3", Stream: "a", DeviceID: "d1", Op: ">=", Threshold: 6, ForDuration: 3 * time.Second},
		{Name: "e4", Stream: "b", Op: "!=", Threshold: 0, ForCount: 2, ForDuration: 2 * time.Second, Severity: Info},
		{Name: "w1", Stream: "a", Source: "window", Window: time.Minute, Op: ">", Threshold: 5},
		{Name: "w2", Stream: "a", Source: "window", Window: time.Minute, Aggregate: "count", SiteWide: true,
			Op: ">=", Threshold: 4, ForCount: 2},
		{Name: "w3", Stream: "b", Source: "window", Window: time.Minute, Aggregate: "p99", Op: "<", Threshold: 2},
	}
}

type input struct {
	window bool
	stream string
	device string
	ts     int64
	value  float64
}

func randomInputs(seed uint64, n int) []input {
	rng := rand.New(rand.NewPCG(seed, 1))
	in := make([]input, n)
	ts := int64(1_700_000_000_000)
	for i := range in {
		ts += rng.Int64N(1500) - 200 // mostly forward, sometimes back
		x := input{
			window: rng.IntN(4) == 0,
			stream: []string{"a", "b"}[rng.IntN(2)],
			device: []string{"d1", "d2", "d3", ""}[rng.IntN(4)],
			ts:     ts,
			value:  float64(rng.IntN(10)),
		}
		if !x.window && x.device == "" {
			x.device = "d4"
		}
		in[i] = x
	}
	return in
}

func feed(e *Engine, x input) []Alert {
	if !x.window {
		return e.OnEvent(x.stream, x.device, x.ts, x.value)
	}
	v := x.value
	return e.OnWindow(WindowInput{Stream: x.stream, DeviceID: x.device, Size: time.Minute, End: x.ts,
		Count: uint64(v), Sum: v * 2, Min: v - 1, Max: v + 1, Mean: v, Last: v, P50: v, P95: v, P99: v})
}

// TestEngineDeterministic feeds two engines the same calls: they return the same
// alerts with the same ids, and every episode is one fire and at most one resolve.
func TestEngineDeterministic(t *testing.T) {
	in := randomInputs(42, 20000)
	a, err := NewEngine(randomRules())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewEngine(randomRules())
	var outA, outB []Alert
	for _, x := range in {
		outA = append(outA, feed(a, x)...)
		outB = append(outB, feed(b, x)...)
	}
	if len(outA) < 100 {
		t.Fatalf("workload too tame: %d alerts", len(outA))
	}
	if !reflect.DeepEqual(outA, outB) {
		t.Fatal("two engines fed the same calls returned different alerts")
	}
	if !reflect.DeepEqual(a.Active(), b.Active()) {
		t.Fatal("two engines fed the same calls have different active alerts")
	}

	// Episodes: per key, fire and resolve alternate, starting with a fire, and a
	// resolve repeats its fire's id.
	type epKey struct{ rule, device string }
	open := make(map[epKey]Alert)
	for _, x := range outA {
		k := epKey{x.Rule, x.DeviceID}
		prev, firing := open[k]
		switch {
		case x.State == Firing && firing:
			t.Fatalf("%s fired while %s was firing", x.ID, prev.ID)
		case x.State == Firing:
			open[k] = x
		case x.State == Resolved && !firing:
			t.Fatalf("%s resolved while not firing", x.ID)
		case x.ID != prev.ID || x.FiredAt != prev.FiredAt || x.Severity != prev.Severity:
			t.Fatalf("resolve %+v does not match its fire %+v", x, prev)
		default:
			delete(open, k)
		}
	}
	if len(open) != len(a.Active()) {
		t.Fatalf("%d episodes open, %d alerts active", len(open), len(a.Active()))
	}
}

// TestEngineStateRestore stops an engine halfway, restores its state (through
// JSON, as a checkpoint would) into a new engine, and finishes there: the alerts
// are those of an engine that never stopped.
func TestEngineStateRestore(t *testing.T) {
	in := randomInputs(7, 10000)
	whole, _ := NewEngine(randomRules())
	var want []Alert
	for _, x := range in {
		want = append(want, feed(whole, x)...)
	}

	first, _ := NewEngine(randomRules())
	var got []Alert
	for _, x := range in[:len(in)/2] {
		got = append(got, feed(first, x)...)
	}
	b, err := json.Marshal(first.State())
	if err != nil {
		t.Fatal(err)
	}
	var st EngineState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Keys) == 0 {
		t.Fatal("no state to carry over")
	}
	second, _ := NewEngine(randomRules())
	if dropped := second.Restore(st); dropped != 0 {
		t.Fatalf("dropped %d keys", dropped)
	}
	if !reflect.DeepEqual(second.State(), first.State()) {
		t.Fatal("restored state differs")
	}
	for _, x := range in[len(in)/2:] {
		got = append(got, feed(second, x)...)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatal("alerts after restore differ from an uninterrupted run")
	}

	// A changed or removed rule loses its keys; the others keep theirs.
	rules := randomRules()
	rules[0].Threshold = 6
	changed, _ := NewEngine(rules[:len(rules)-1])
	dropped := changed.Restore(st)
	lost := 0
	for _, k := range st.Keys {
		if k.Rule == rules[0].Name || k.Rule == rules[len(rules)-1].Name {
			lost++
		}
	}
	if dropped != lost || len(changed.State().Keys) != len(st.Keys)-lost {
		t.Fatalf("dropped %d keys, want %d", dropped, lost)
	}
}

func TestAlertJSON(t *testing.T) {
	a := Alert{ID: "hot/d1/1700000000123", Rule: "hot", Severity: Critical, State: Firing, Stream: "temperature",
		DeviceID: "d1", Value: 31.5, Threshold: 30, FiredAt: 1700000000123}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"hot/d1/1700000000123","rule":"hot","severity":"critical","state":"firing","stream":"temperature",` +
		`"device_id":"d1","value":31.5,"threshold":30,"fired_at":"2023-11-14T22:13:20.123Z"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	var back Alert
	if err := json.Unmarshal(b, &back); err != nil || back != a {
		t.Fatalf("round trip: %+v, %v", back, err)
	}

	a.State, a.ResolvedAt, a.DeviceID, a.ID = Resolved, 1700000060000, "", "hot/*/1700000000123"
	b, _ = json.Marshal(a)
	if !strings.Contains(string(b), `"device_id":"","value":31.5`) ||
		!strings.HasSuffix(string(b), `"fired_at":"2023-11-14T22:13:20.123Z","resolved_at":"2023-11-14T22:14:20.000Z"}`) {
		t.Fatalf("resolved site-wide alert: %s", b)
	}
	if err := json.Unmarshal(b, &back); err != nil || back != a {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}

// TestEngineNoAllocs: an input that changes no state allocates nothing, so the
// processor's hot path pays only for alerts.
func TestEngineNoAllocs(t *testing.T) {
	e, err := NewEngine(randomRules())
	if err != nil {
		t.Fatal(err)
	}
	e.OnEvent("a", "d2", 1000, 9) // e1 fires for d2
	for name, f := range map[string]func(){
		"quiet":      func() { e.OnEvent("a", "d1", 2000, 4) },
		"suppressed": func() { e.OnEvent("a", "d2", 2000, 9) },
		"window": func() {
			e.OnWindow(WindowInput{Stream: "a", DeviceID: "d1", Size: time.Minute, End: 60000, Count: 1, Mean: 1})
		},
		"no rules": func() { e.OnEvent("other", "d1", 2000, 9) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per input", name, n)
		}
	}
}
