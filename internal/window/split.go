package window

import (
	"errors"
	"fmt"
)

// A stream split across engines (the processor's hot-stream splitting) has
// its devices' windows in the engines its devices are routed to, each
// marked SetNoSite, and its site-wide windows in one engine, its home,
// which gets every event through AddSite (and Add for the devices routed to
// it). Every window is then still computed by one engine from all of its
// events in log order, so its result is the one an unsplit engine gives,
// bit for bit — provided each engine's watermark is the stream's before
// every event: the caller advances a device's engine to the stream's
// watermark before adding to it.

// SetNoSite makes the engine keep no site-wide windows for the stream: an
// engine that holds some of a split stream's devices.
func (e *Engine) SetNoSite(streamName string) { e.stream(streamName).noSite = true }

// RedistributeStream takes a stream's states from any number of engines
// (AppendStreamState; taken at one watermark, as the processor's
// checkpoints are) and returns the state each of n engines gets when the
// stream is routed anew: the site-wide windows and the late count to home,
// each device's windows to route(device), the watermark and highest event
// time to all. The states' devices must be disjoint, and at most one may
// hold site-wide windows. RestoreStream checks each state returned.
func RedistributeStream(states [][]byte, n, home int, route func(device string) int) ([][]byte, error) {
	if len(states) == 0 || n <= 0 || home < 0 || home >= n {
		return nil, errors.New("window: redistribute: no states, or home outside the engines")
	}
	var (
		scratch *Engine
		merged  *stream
		name    string
	)
	for i, data := range states {
		d := decoder{b: data, corrupt: ErrCorruptState}
		nm := d.stateName()
		cfg := d.stateConfig()
		if d.err != nil {
			return nil, fmt.Errorf("state %d: %w", i, d.err)
		}
		if scratch == nil {
			var err error
			if scratch, err = New(cfg.options()); err != nil {
				return nil, err
			}
			name = nm
		} else if nm != name || !cfg.equal(scratch.config()) {
			return nil, fmt.Errorf("%w: state %d is of stream %q with %v, not %q with %v", ErrStateConfig, i, nm, cfg, name, scratch.config())
		}
		s, _, where := scratch.decodeStream(&d, nm)
		if d.err != nil {
			return nil, fmt.Errorf("state %d: %w (%s)", i, d.err, where())
		}
		if merged == nil {
			merged = s
			continue
		}
		if s.hasW && (!merged.hasW || s.w > merged.w) {
			merged.w, merged.hasW = s.w, true
		}
		if s.seen && (!merged.seen || s.maxTS > merged.maxTS) {
			merged.maxTS, merged.seen = s.maxTS, true
		}
		merged.late += s.late
		if s.site.open > 0 || s.site.lead.start != emptyStart {
			if merged.site.open > 0 || merged.site.lead.start != emptyStart {
				return nil, fmt.Errorf("%w: site-wide windows of %q in two states", ErrCorruptState, name)
			}
			merged.site = s.site
		}
		var dup error
		s.keys.all(func(k *key) {
			if merged.keys.get(k.device) != nil {
				dup = fmt.Errorf("%w: device %q of %q in two states", ErrCorruptState, k.device, name)
				return
			}
			merged.keys.put(k)
		})
		if dup != nil {
			return nil, dup
		}
	}
	parts := make([]*stream, n)
	for t := range parts {
		parts[t] = &stream{name: name, keys: newKeyTable(), site: scratch.newKey(""), w: merged.w, hasW: merged.hasW,
			maxTS: merged.maxTS, seen: merged.seen}
	}
	parts[home].site, parts[home].late = merged.site, merged.late
	var bad error
	merged.keys.all(func(k *key) {
		t := route(k.device)
		if t < 0 || t >= n {
			bad = fmt.Errorf("window: redistribute: device %q routed to engine %d of %d", k.device, t, n)
			return
		}
		parts[t].keys.put(k)
	})
	if bad != nil {
		return nil, bad
	}
	out := make([][]byte, n)
	for t, s := range parts {
		out[t] = scratch.appendStreamState(nil, name, s)
	}
	return out, nil
}
