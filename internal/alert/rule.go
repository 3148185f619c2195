package alert

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"time"
)

// Rule is one alert rule: a threshold on a stream's raw values or on one aggregate
// of its closed windows, held for a number of inputs or a span of event time.
type Rule struct {
	Name        string        `yaml:"name"`         // unique, [A-Za-z0-9_.-]+
	Stream      string        `yaml:"stream"`       // required
	DeviceID    string        `yaml:"device_id"`    // optional: only this device
	Source      string        `yaml:"source"`       // "event" (raw values, default) or "window"
	Window      time.Duration `yaml:"window"`       // source window: which window size (required then)
	Aggregate   string        `yaml:"aggregate"`    // source window: count,sum,min,max,mean,last,p50,p95,p99 (default mean)
	SiteWide    bool          `yaml:"site_wide"`    // source window: the site-wide window instead of per device
	Op          string        `yaml:"op"`           // ">", ">=", "<", "<=", "==", "!="
	Threshold   float64       `yaml:"threshold"`    //
	ForCount    int           `yaml:"for_count"`    // condition holds for N consecutive inputs (default 1)
	ForDuration time.Duration `yaml:"for_duration"` // ...or continuously this long in event time
	Severity    Severity      `yaml:"severity"`     // default warning
}

// Rule sources.
const (
	SourceEvent  = "event"
	SourceWindow = "window"
)

var (
	namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	ops         = []string{">", ">=", "<", "<=", "==", "!="}
	aggregates  = []string{"count", "sum", "min", "max", "mean", "last", "p50", "p95", "p99"}
)

// WithDefaults returns the rule with zero fields set to their defaults: source
// event, aggregate mean (window rules), for_count 1, severity warning.
func (r Rule) WithDefaults() Rule {
	if r.Source == "" {
		r.Source = SourceEvent
	}
	if r.Source == SourceWindow && r.Aggregate == "" {
		r.Aggregate = "mean"
	}
	if r.ForCount == 0 {
		r.ForCount = 1
	}
	if r.Severity == "" {
		r.Severity = Warning
	}
	return r
}

// Validate reports the first problem with the rule, naming the rule and the field.
// Zero fields that have defaults are valid.
func (r Rule) Validate() error {
	if r.Name == "" {
		return errors.New("rule: name is required")
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("rule %q: %s", r.Name, fmt.Sprintf(format, args...))
	}
	if !namePattern.MatchString(r.Name) {
		return fail("name must match [A-Za-z0-9_.-]+")
	}
	if r.Stream == "" {
		return fail("stream is required")
	}
	switch r.Source {
	case "", SourceEvent:
		switch {
		case r.Window != 0:
			return fail("window applies only to source window")
		case r.Aggregate != "":
			return fail("aggregate applies only to source window")
		case r.SiteWide:
			return fail("site_wide applies only to source window")
		}
	case SourceWindow:
		if r.Window <= 0 {
			return fail("window is required for source window and must be positive, got %s", r.Window)
		}
		if r.Aggregate != "" && !slices.Contains(aggregates, r.Aggregate) {
			return fail("aggregate %q must be one of count sum min max mean last p50 p95 p99", r.Aggregate)
		}
		if r.SiteWide && r.DeviceID != "" {
			return fail("device_id cannot be set on a site_wide rule")
		}
	default:
		return fail("source %q must be event or window", r.Source)
	}
	if !slices.Contains(ops, r.Op) {
		return fail("op %q must be one of > >= < <= == !=", r.Op)
	}
	if math.IsNaN(r.Threshold) || math.IsInf(r.Threshold, 0) {
		return fail("threshold must be a finite number")
	}
	if r.ForCount < 0 {
		return fail("for_count %d must not be negative", r.ForCount)
	}
	if r.ForDuration < 0 {
		return fail("for_duration %s must not be negative", r.ForDuration)
	}
	switch r.Severity {
	case "", Info, Warning, Critical:
	default:
		return fail("severity %q must be one of info warning critical", r.Severity)
	}
	return nil
}

// ValidateRules validates every rule and that names are unique. It reports all
// problems found, one per line.
func ValidateRules(rules []Rule) error {
	var errs []error
	seen := make(map[string]int, len(rules))
	for i, r := range rules {
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("rule #%d: name is required", i+1))
			continue
		}
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
		}
		if j, dup := seen[r.Name]; dup {
			errs = append(errs, fmt.Errorf("rule %q: name is used by rules #%d and #%d", r.Name, j+1, i+1))
			continue
		}
		seen[r.Name] = i
	}
	return errors.Join(errs...)
}
