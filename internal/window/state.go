package window

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"time"
)

// Stream state encoding, version 1; docs/format/window-state.md has the
// details. Integers are Go varints (encoding/binary), minimally encoded; f64 is
// float64 bits, 8 bytes little-endian; str is a uvarint length, then the bytes.
//
//	version    byte     1
//	stream     str
//	sizes      uvarint n ∈ [1, MaxSizes], then n uvarints: the window sizes in
//	           ms, strictly ascending, each ≥ 1000
//	lateness   uvarint  allowed lateness, ms
//	accuracy   f64      sketch accuracy, in [MinAccuracy, MaxAccuracy]
//	flags      byte     bit 0: watermark set; bit 1: max_ts set; bit 2: some
//	                    window's sum spilled (over below); others 0
//	watermark  varint   if flags bit 0
//	max_ts     varint   if flags bit 1
//	late       uvarint
//	site       windows  of the site-wide key (device id "")
//	devices    uvarint n, then n × (device str, windows): ids non-empty and
//	           strictly ascending bytewise, each with at least one window
//
//	windows:   uvarint n, then n windows strictly ascending by (size, start):
//	  size     uvarint  index into sizes
//	  start    uvarint  (start − floor(watermark, size)) / size
//	  sketch   zero uvarint, negative store, positive store: the Sketch
//	           encoding without its version and accuracy
//	  sum, min, max, last  4 × f64   only if the sketch's count is not 0; finite
//	  last_ts  uvarint  last_ts − start, < size; only if the count is not 0
//	  over     f64      only if flags bit 2 and the count is not 0: the sum
//	                  spilled, scaled by 2^-128 (window.go); finite, and not 0
//	                  in at least one window of the stream
//
// The encoding is canonical: RestoreStream accepts exactly what
// AppendStreamState can write, so a restored stream encodes to the same bytes.
const stateVersion = 1

// maxKeyCount bounds the sum of the counts of one key's windows in a restored
// state (2^62, far above any real count), so that no merge or later event can
// overflow a count.
const maxKeyCount = 1 << 62

// Least encoded sizes, to bound counts by the bytes left before allocating.
const (
	minWindowBytes = 5                  // size, start, zero, two empty stores
	minKeyBytes    = 3 + minWindowBytes // device of one byte, window count, a window
)

// maxMs is the largest number of milliseconds a time.Duration holds.
const maxMs = math.MaxInt64 / int64(time.Millisecond)

var (
	// ErrCorruptState is wrapped by the errors of RestoreStream and
	// StreamStateName for bytes that are not a stream state encoding.
	ErrCorruptState = errors.New("window: corrupt stream state")
	// ErrStateConfig is wrapped by the error of RestoreStream for a state
	// written by an Engine with other sizes, allowed lateness or accuracy.
	ErrStateConfig = errors.New("window: stream state of an engine with other options")
)

// Streams returns the names of the streams the Engine holds state for, sorted:
// every stream passed to Add or Advance, or restored.
func (e *Engine) Streams() []string {
	return slices.Sorted(maps.Keys(e.streams))
}

// AppendStreamState appends to dst a self-contained encoding of everything the
// Engine holds for the stream: watermark, highest event time, late count and
// every open window, its aggregates and sketch, plus the Engine's sizes,
// allowed lateness and accuracy. RestoreStream installs it in any Engine of
// the same options that does not hold the stream, which then continues with
// it exactly as this one would: results and their order, bit for bit. The encoding is deterministic: equal states
// give equal bytes. A stream the Engine does not hold encodes as an empty
// stream. It applies pending updates first and changes no result; it must not
// be called from OnClose.
func (e *Engine) AppendStreamState(dst []byte, streamName string) []byte {
	if e.closing {
		panic("window: AppendStreamState called from OnClose")
	}
	e.flush()
	return e.appendStreamState(dst, streamName, e.streams[streamName])
}

// appendStreamState is AppendStreamState of s, named streamName.
func (e *Engine) appendStreamState(dst []byte, streamName string, s *stream) []byte {
	dst = append(dst, stateVersion)
	dst = appendStr(dst, streamName)
	dst = e.config().append(dst)
	if s == nil {
		return append(dst, 0, 0, 0, 0) // flags, late, site windows, devices
	}
	var flags byte
	if s.hasW {
		flags |= 1
	}
	if s.seen {
		flags |= 2
	}
	// Bit 2 is known once the windows are written: a stream with a spilled
	// sum, which is rare, is written twice.
	start := len(dst)
	dst, spilled := e.appendStream(dst, s, flags, false)
	if spilled {
		dst, _ = e.appendStream(dst[:start], s, flags|4, true)
	}
	return dst
}

// appendStream appends the stream's state from its flags on, with each
// window's over if withOver, and reports whether a window has a spilled sum.
func (e *Engine) appendStream(dst []byte, s *stream, flags byte, withOver bool) ([]byte, bool) {
	dst = append(dst, flags)
	if s.hasW {
		dst = binary.AppendVarint(dst, s.w)
	}
	if s.seen {
		dst = binary.AppendVarint(dst, s.maxTS)
	}
	dst = binary.AppendUvarint(dst, s.late)

	sc := stateScratch{withOver: withOver}
	if s.seen { // windows exist only then, and only then is the floor safe
		for i, size := range e.sizes {
			sc.base[i] = floor(s.w, size)
		}
	}
	dst = e.appendWindows(dst, s.site, &sc)
	keys := make([]*key, 0, s.keys.n)
	s.keys.all(func(k *key) { keys = append(keys, k) })
	slices.SortFunc(keys, func(a, b *key) int { return strings.Compare(a.device, b.device) })
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = appendStr(dst, k.device)
		dst = e.appendWindows(dst, k, &sc)
	}
	return dst, sc.spilled
}

// stateScratch is reused across the keys of one stream.
type stateScratch struct {
	base     [MaxSizes]int64 // per size: floor(watermark, size)
	withOver bool            // flags bit 2: non-empty windows carry over
	spilled  bool            // a window's over is not 0
	ptrs     []*window       // encoding: the key's windows
	wins     []window        // decoding: the key's windows
}

func (e *Engine) appendWindows(dst []byte, k *key, sc *stateScratch) []byte {
	ws := sc.ptrs[:0]
	if k.lead.start != emptyStart {
		ws = append(ws, &k.lead)
	}
	for j := range k.ws {
		if w := &k.ws[j]; w.start != emptyStart {
			ws = append(ws, w)
		}
	}
	slices.SortFunc(ws, func(a, b *window) int {
		return cmp.Or(cmp.Compare(a.size, b.size), cmp.Compare(a.start, b.start))
	})
	sc.ptrs = ws
	dst = binary.AppendUvarint(dst, uint64(len(ws)))
	for _, w := range ws {
		size := e.sizes[w.size]
		dst = binary.AppendUvarint(dst, uint64(w.size))
		dst = binary.AppendUvarint(dst, uint64((w.start-sc.base[w.size])/size))
		dst = binary.AppendUvarint(dst, w.sk.zero)
		dst = w.sk.negs().appendBinary(dst)
		dst = w.sk.pos.appendBinary(dst)
		if w.sk.n != 0 {
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(w.sum))
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(w.min))
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(w.max))
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(w.last))
			dst = binary.AppendUvarint(dst, uint64(w.lastTS-w.start))
			if sc.withOver {
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(w.over))
			}
			sc.spilled = sc.spilled || w.over != 0
		}
	}
	return dst
}

func appendStr(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

// StreamStateName returns the stream name in an encoding of AppendStreamState,
// reading no further than the name: for routing a state to its Engine before
// RestoreStream checks the rest.
func StreamStateName(data []byte) (string, error) {
	d := decoder{b: data, corrupt: ErrCorruptState}
	name := d.stateName()
	return name, d.err
}

// RestoreStream installs a stream state encoded by AppendStreamState and
// returns the stream's name. The Engine must have the options the state was
// written with (else the error wraps ErrStateConfig) and must not hold the
// stream yet. Bytes that are not a valid encoding give an error wrapping
// ErrCorruptState that says what is wrong. On error the Engine is unchanged
// and streamName is the name if the encoding got that far. Any input is safe:
// what RestoreStream accepts is a state the Engine can reach, and it encodes
// back to the same bytes.
func (e *Engine) RestoreStream(data []byte) (streamName string, err error) {
	d := decoder{b: data, corrupt: ErrCorruptState}
	name := d.stateName()
	cfg := d.stateConfig()
	if d.err != nil {
		return name, fmt.Errorf("%w (at byte %d)", d.err, len(data)-len(d.b))
	}
	if own := e.config(); !cfg.equal(own) {
		return name, fmt.Errorf("%w: the state has %v, this engine %v", ErrStateConfig, cfg, own)
	}
	if e.streams[name] != nil {
		return name, fmt.Errorf("window: stream %q already has state in this engine", name)
	}
	s, open, where := e.decodeStream(&d, name)
	if d.err != nil {
		return name, fmt.Errorf("%w (%s, at byte %d)", d.err, where(), len(data)-len(d.b))
	}
	e.streams[name] = s
	e.open += open
	return name, nil
}

func (d *decoder) stateName() string {
	if v := d.byte(); d.err == nil && v != stateVersion {
		d.fail("unknown version %d", v)
	}
	return d.str()
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail("string of %d bytes with %d left", n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) f64() float64 { return math.Float64frombits(d.uint64()) }

// stateConfig is the part of an Engine's options a stream state depends on.
type stateConfig struct {
	sizes    []int64 // ms, ascending
	lateness int64   // ms
	accuracy float64
}

func (e *Engine) config() stateConfig {
	return stateConfig{sizes: e.sizes, lateness: e.lateness, accuracy: e.m.accuracy}
}

func (c stateConfig) append(dst []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(c.sizes)))
	for _, size := range c.sizes {
		dst = binary.AppendUvarint(dst, uint64(size))
	}
	dst = binary.AppendUvarint(dst, uint64(c.lateness))
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(c.accuracy))
}

// stateConfig reads a configuration; every one it accepts is that of valid
// Options.
func (d *decoder) stateConfig() stateConfig {
	var c stateConfig
	n := d.uvarint()
	if d.err != nil {
		return c
	}
	if n == 0 || n > MaxSizes {
		d.fail("%d window sizes, not 1 to %d", n, MaxSizes)
		return c
	}
	c.sizes = make([]int64, n)
	for i := range c.sizes {
		v := d.uvarint()
		switch {
		case d.err != nil:
			return c
		case v < uint64(MinSize.Milliseconds()) || v > uint64(maxMs):
			d.fail("window size %d ms out of range", v)
		case i > 0 && int64(v) <= c.sizes[i-1]:
			d.fail("window sizes not strictly ascending")
		}
		c.sizes[i] = int64(v)
	}
	if l := d.uvarint(); d.err == nil && l > uint64(maxMs) {
		d.fail("allowed lateness %d ms out of range", l)
	} else {
		c.lateness = int64(l)
	}
	c.accuracy = d.f64()
	if d.err == nil && !(c.accuracy >= MinAccuracy && c.accuracy <= MaxAccuracy) {
		d.fail("accuracy %v outside [%v, %v]", c.accuracy, MinAccuracy, MaxAccuracy)
	}
	return c
}

func (c stateConfig) equal(o stateConfig) bool {
	return slices.Equal(c.sizes, o.sizes) && c.lateness == o.lateness &&
		math.Float64bits(c.accuracy) == math.Float64bits(o.accuracy)
}

// options returns Options that give an Engine of configuration c.
func (c stateConfig) options() Options {
	o := Options{AllowedLateness: time.Duration(c.lateness) * time.Millisecond, Accuracy: c.accuracy}
	if c.lateness == 0 {
		o.AllowedLateness = NoLateness
	}
	for _, ms := range c.sizes {
		o.Sizes = append(o.Sizes, time.Duration(ms)*time.Millisecond)
	}
	return o
}

func (c stateConfig) String() string {
	o := c.options()
	return fmt.Sprintf("sizes %v, allowed lateness %v, accuracy %v", o.Sizes, time.Duration(c.lateness)*time.Millisecond, c.accuracy)
}

// decodeStream reads the rest of a stream state after the configuration into
// a new stream, not yet installed, and returns it with its number of open
// windows. where describes the part it stopped in, for errors.
func (e *Engine) decodeStream(d *decoder, name string) (s *stream, open int, where func() string) {
	s = &stream{name: name, keys: newKeyTable(), site: e.newKey(""), w: math.MinInt64, pendingEnd: math.MaxInt64}
	s.ends.init(len(e.sizes))
	part := "stream header"
	device, ndev := 0, uint64(0) // in part "device": the one being read, of ndev
	var id string
	where = func() string {
		if part != "device" {
			return part
		}
		if id == "" {
			return fmt.Sprintf("device %d of %d", device+1, ndev)
		}
		return fmt.Sprintf("device %d of %d, %q", device+1, ndev, id)
	}

	flags := d.byte()
	if d.err == nil && flags&^7 != 0 {
		d.fail("unknown flags %#x", flags)
	}
	if flags&1 != 0 {
		s.w, s.hasW = d.varint(), true
	}
	if flags&2 != 0 {
		s.maxTS, s.seen = d.varint(), true
		switch {
		case d.err != nil:
		case s.maxTS < MinTime || s.maxTS > MaxTime:
			d.fail("highest event time %d outside [MinTime, MaxTime]", s.maxTS)
		case !s.hasW:
			d.fail("highest event time set without a watermark")
		case s.w < s.maxTS-e.lateness:
			d.fail("watermark %d below the highest event time %d minus the allowed lateness", s.w, s.maxTS)
		}
	}
	s.late = d.uvarint()
	sc := stateScratch{withOver: flags&4 != 0}
	if s.seen {
		for i, size := range e.sizes {
			sc.base[i] = floor(s.w, size)
		}
	}
	if d.err != nil {
		return s, 0, where
	}
	part = "site-wide windows"
	open = e.decodeWindows(d, s, s.site, &sc)
	if d.err != nil {
		return s, 0, where
	}
	part = "device count"
	ndev = d.uvarint()
	if d.err == nil && ndev > uint64(len(d.b))/minKeyBytes {
		d.fail("%d devices in %d bytes", ndev, len(d.b))
	}
	if d.err != nil {
		return s, 0, where
	}
	part = "device"
	if ndev > 0 { // room for all, at most half full, as put would grow it
		s.keys.resize(max(minKeySlots, 1<<bits.Len64(2*ndev)))
	}
	prev := ""
	for ; uint64(device) < ndev; device++ {
		id = d.str()
		switch {
		case d.err != nil:
		case id == "":
			d.fail("empty device id")
		case device > 0 && id <= prev:
			d.fail("device id not after %q", prev)
		}
		if d.err != nil {
			return s, 0, where
		}
		k := e.newKey(id)
		n := e.decodeWindows(d, s, k, &sc)
		if d.err == nil && n == 0 {
			d.fail("device without windows")
		}
		if d.err != nil {
			return s, 0, where
		}
		s.keys.put(k)
		open += n
		prev = id
	}
	part = "end"
	switch {
	case len(d.b) > 0:
		d.fail("%d trailing bytes", len(d.b))
	case sc.withOver && !sc.spilled:
		d.fail("flag of a spilled sum, and no window has one")
	}
	return s, open, where
}

// decodeWindows reads a key's windows into k and s.ends and returns their
// number. It checks what the Engine relies on: windows end after the
// watermark and start no later than the highest event time; every window's
// parents are open; an empty window has an open child.
func (e *Engine) decodeWindows(d *decoder, s *stream, k *key, sc *stateScratch) int {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return 0
	}
	if !s.seen {
		d.fail("windows but no event seen")
		return 0
	}
	if n > uint64(len(d.b))/minWindowBytes {
		d.fail("%d windows in %d bytes", n, len(d.b))
		return 0
	}
	wins := sc.wins[:0]
	var total uint64 // of the key's windows
	for j := range n {
		si, q := d.uvarint(), d.uvarint()
		if d.err != nil {
			return 0
		}
		if si >= uint64(len(e.sizes)) {
			d.fail("window %d: size index %d with %d sizes", j, si, len(e.sizes))
			return 0
		}
		i := int(si)
		size, base := e.sizes[i], sc.base[i]
		if s.maxTS < base || q > uint64((s.maxTS-base)/size) {
			d.fail("window %d: starts after the highest event time", j)
			return 0
		}
		start := base + int64(q)*size
		if p := len(wins) - 1; p >= 0 && (i < wins[p].size || i == wins[p].size && start <= wins[p].start) {
			d.fail("window %d: not after the one before by size and start", j)
			return 0
		}
		w := window{start: start, size: i, min: math.Inf(1), max: math.Inf(-1), lastTS: math.MinInt64}
		before := total
		w.sk.zero = d.uvarint()
		if d.err == nil && w.sk.zero > maxKeyCount-total {
			d.fail("window %d: counts add up to more than 2^62", j)
		}
		total += w.sk.zero
		w.sk.setNeg(d.store(e.m, &total))
		w.sk.pos = d.store(e.m, &total)
		if d.err == nil && total > maxKeyCount {
			d.fail("window %d: counts add up to more than 2^62", j)
		}
		if w.sk.n = total - before; w.sk.n != 0 {
			w.sum, w.min, w.max, w.last = d.f64(), d.f64(), d.f64(), d.f64()
			off := d.uvarint()
			if d.err == nil && off >= uint64(size) {
				d.fail("window %d: last event time %d ms past the start of a %d ms window", j, off, size)
			}
			w.lastTS = start + int64(off)
			if sc.withOver {
				w.over = d.f64()
				sc.spilled = sc.spilled || w.over != 0
			}
			if d.err == nil && !finite(w.sum, w.min, w.max, w.last, w.over) {
				d.fail("window %d: an aggregate is not finite", j)
			}
		}
		if d.err != nil {
			return 0
		}
		wins = append(wins, w)
	}
	sc.wins = wins
	for j := range wins {
		w := &wins[j]
		for _, p := range e.parents[w.size] {
			ps := floor(w.start, e.sizes[p])
			if x := searchWindows(wins, p, ps); x == len(wins) || wins[x].size != p || wins[x].start != ps {
				d.fail("window %d: its parent of size %v is not open", j, e.durs[p])
				return 0
			}
		}
		if w.sk.n == 0 {
			c := e.child[w.size]
			end := w.start + e.sizes[w.size]
			if x := searchWindows(wins, c, w.start); c < 0 || x == len(wins) || wins[x].size != c || wins[x].start >= end {
				d.fail("window %d: empty, and no child window is open", j)
				return 0
			}
		}
	}
	// Install: of each size, the latest window goes to its slot, the others
	// (decoded first, being earlier) to ws.
	for j := range wins {
		w := &wins[j]
		if slot := k.latest(w.size); slot.start != emptyStart {
			k.ws = append(k.ws, *slot)
		}
		*k.latest(w.size) = *w
		s.ends.insert(k, w.size, w.start+e.sizes[w.size])
	}
	clear(wins) // drop the references to sketch buckets
	k.open = len(wins)
	return len(wins)
}

func finite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsInf(v, 0) || math.IsNaN(v) {
			return false
		}
	}
	return true
}

// searchWindows returns the index of the first of wins, sorted by size and
// start, not before (size, start).
func searchWindows(wins []window, size int, start int64) int {
	return sort.Search(len(wins), func(x int) bool {
		return wins[x].size > size || wins[x].size == size && wins[x].start >= start
	})
}
