package window

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Defaults for zero Options fields.
var DefaultSizes = []time.Duration{time.Minute, 5 * time.Minute, time.Hour}

const DefaultAllowedLateness = 30 * time.Second

// NoLateness asks for an allowed lateness of zero; a zero AllowedLateness means
// DefaultAllowedLateness.
const NoLateness time.Duration = -1

// MinSize is the shortest window size; MaxSizes the most sizes an Engine takes.
const (
	MinSize  = time.Second
	MaxSizes = 16
)

// Options configure an Engine. Zero fields take the defaults.
type Options struct {
	// Sizes are the window sizes; each at least MinSize, a whole number of
	// milliseconds, no duplicates, at most MaxSizes of them. Default
	// DefaultSizes (1m, 5m, 1h).
	Sizes []time.Duration
	// AllowedLateness is subtracted from the highest event time seen to get the
	// watermark; a whole number of milliseconds, ≥ 0, or NoLateness. Default
	// DefaultAllowedLateness (30s).
	AllowedLateness time.Duration
	// Accuracy is the relative accuracy of the quantile sketches, in
	// [MinAccuracy, MaxAccuracy]. Default DefaultAccuracy (0.01).
	Accuracy float64
	// OnClose receives every closed window, in the order documented on Engine.
	// It runs inside Add or Advance and must not call either; the Result,
	// including its Sketch, belongs to the callee. Nil discards results.
	OnClose func(Result)
}

// withDefaults returns o with zero fields filled in and NoLateness resolved.
func (o Options) withDefaults() Options {
	if len(o.Sizes) == 0 {
		o.Sizes = DefaultSizes
	}
	switch o.AllowedLateness {
	case 0:
		o.AllowedLateness = DefaultAllowedLateness
	case NoLateness:
		o.AllowedLateness = 0
	}
	if o.Accuracy == 0 {
		o.Accuracy = DefaultAccuracy
	}
	return o
}

// Validate reports every option that cannot work, each in its own line of the
// joined error. Zero fields are valid: they take the defaults.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("window: "+format, args...))
	}
	if o.AllowedLateness < 0 && o.AllowedLateness != NoLateness {
		bad("allowed lateness %v is negative (NoLateness asks for none)", o.AllowedLateness)
	}
	o = o.withDefaults()
	if len(o.Sizes) > MaxSizes {
		bad("%d sizes are more than the maximum of %d", len(o.Sizes), MaxSizes)
	}
	for i, d := range o.Sizes {
		switch {
		case d < MinSize:
			bad("size %v is below the minimum of %v", d, MinSize)
		case d%time.Millisecond != 0:
			bad("size %v is not a whole number of milliseconds", d)
		case slices.Contains(o.Sizes[:i], d):
			bad("size %v is given twice", d)
		}
	}
	if o.AllowedLateness > 0 && o.AllowedLateness%time.Millisecond != 0 {
		bad("allowed lateness %v is not a whole number of milliseconds", o.AllowedLateness)
	}
	if !(o.Accuracy >= MinAccuracy && o.Accuracy <= MaxAccuracy) {
		bad("accuracy %v is outside [%v, %v]", o.Accuracy, MinAccuracy, MaxAccuracy)
	}
	return errors.Join(errs...)
}
