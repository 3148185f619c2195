package event

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// JSON event objects as devices send them, over HTTP and MQTT:
//
//	{"device_id":"dev-1","stream":"temperature","ts":"2026-11-26T20:48:15.123Z","value":21.5,
//	 "id":"m-42","tags":{"site":"north"}}
//
// Decoding follows RFC 8259 and agrees with encoding/json on which inputs are
// valid JSON, including its nesting limit. On top of that:
//   - keys match exactly (case-sensitive); unknown keys are skipped, whatever their value;
//   - a key given twice takes its last value, and only the last value is validated;
//   - null for ts, id or tags means the field is absent;
//   - strings that are kept (names, tags, ts) must be valid Unicode: raw invalid
//     UTF-8 or a \u escape naming an unpaired surrogate is refused, not replaced;
//   - when several fields are wrong, the error names the first of device_id,
//     stream, ts, value, id, tags, in that order; inside tags, the first bad
//     entry in document order.

// Limits bound what a valid event may contain. Zero fields take defaults.
type Limits struct {
	MaxFuture time.Duration // ts may be at most this far after now; default 5m
}

const defaultMaxFuture = 5 * time.Minute

func (l Limits) maxFuture() time.Duration {
	if l.MaxFuture <= 0 {
		return defaultMaxFuture
	}
	return l.MaxFuture
}

// Reason is a short, stable label for a rejection, used as a metric label.
type Reason string

const (
	ReasonMalformed Reason = "malformed_json" // not valid JSON / not an object
	ReasonMissing   Reason = "missing_field"
	ReasonType      Reason = "wrong_type"
	ReasonInvalid   Reason = "invalid_value"         // bad characters, too long, non-finite, too many tags, topic mismatch
	ReasonFuture    Reason = "future_timestamp"      // ts after now + Limits.MaxFuture
	ReasonPast      Reason = "implausible_timestamp" // ts before 2000-01-01
)

// Error is why one event was refused. Field is empty for malformed JSON.
type Error struct {
	Field  string
	Reason Reason
	Msg    string
}

// Error returns `field "<Field>": <Msg>`, or Msg alone when Field is empty.
func (e *Error) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return "field " + strconv.Quote(e.Field) + ": " + e.Msg
}

// minTS is 2000-01-01T00:00:00Z in Unix milliseconds; earlier event times are
// taken for a device clock that was never set.
const minTS = 946684800000

// maxDepth is the deepest nesting of arrays and objects accepted, the same
// limit as encoding/json.
const maxDepth = 10000

// ParseObject decodes one JSON event object. now is the node's clock: it fills a missing ts
// and bounds future ones. Received is left zero. Errors are *Error.
func ParseObject(b []byte, now time.Time, lim Limits) (Event, error) {
	var s scanner
	s.init(b)
	ev, err := s.parseObject(now, lim, nil)
	if err != nil {
		return Event{}, err
	}
	return ev, nil
}

// MaxRejections is the most invalid elements a batch may hold. A body with more
// is not a device batch with a few bad readings but a broken producer: it is
// refused as a whole, which also bounds the memory spent describing it.
const MaxRejections = 1000

// Rejection is one refused element of a batch.
type Rejection struct {
	Index int
	Err   error
}

// ParseBatch decodes an HTTP body. ndjson=true (Content-Type application/x-ndjson) means one
// object per line. Otherwise: first non-space byte '[' → a JSON array of objects; '{' → one
// object, or, if the body is not a single object and has at least two non-blank lines,
// NDJSON lines. Valid events are returned in input order; each invalid element is a
// Rejection with its index (array element index, or 0-based line number counting only
// non-blank lines for NDJSON) and an *Error. A body that is not a JSON array/object at
// all, an array that is not syntactically valid JSON, or an object that is not and is
// alone on its only non-blank line, returns err (*Error, ReasonMalformed, with byte
// offset) and no events; so does a body with more than MaxRejections invalid
// elements. Blank lines in NDJSON are skipped. A bad NDJSON line never affects
// other lines; its error's byte offset counts from the start of the line.
func ParseBatch(body []byte, ndjson bool, now time.Time, lim Limits) ([]Event, []Rejection, error) {
	var s scanner
	s.init(body)
	if ndjson {
		return s.parseLines(now, lim)
	}
	s.ws()
	if s.i >= len(body) {
		return nil, nil, s.eof()
	}
	switch body[s.i] {
	case '[':
		evs, rejs, err := s.parseArray(now, lim)
		if err != nil {
			return nil, nil, err
		}
		return evs, rejs, nil
	case '{':
		ev, err := s.parseObject(now, lim, nil)
		if err == nil {
			return []Event{ev}, nil, nil
		}
		if err.Reason != ReasonMalformed {
			return nil, []Rejection{{Index: 0, Err: err}}, nil
		}
		if multiLine(body) {
			s.init(body)
			return s.parseLines(now, lim)
		}
		return nil, nil, err
	default:
		return nil, nil, s.notContainer("a JSON array or object")
	}
}

// ParseMQTT decodes an MQTT payload published on devices/{deviceID}/{stream}: either a bare
// JSON number (e.g. `21.5`) or a JSON event object in which device_id and stream may be
// omitted; if present they must equal the topic's (ReasonInvalid). The topic segments
// themselves must pass ValidName. Errors are *Error.
func ParseMQTT(deviceID, stream string, payload []byte, now time.Time, lim Limits) (Event, error) {
	topic := [2]string{deviceID, stream}
	for f, v := range topic {
		if why := ValidName(v); why != "" {
			return Event{}, &Error{Field: fieldNames[f], Reason: ReasonInvalid, Msg: "topic segment " + why}
		}
	}
	var s scanner
	s.init(payload)
	s.ws()
	if s.i < len(payload) && (payload[s.i] == '-' || isDigit(payload[s.i])) {
		lit, _, ok := s.number()
		if ok {
			s.ws()
			if s.i < len(payload) {
				s.fail("after top-level value")
				ok = false
			}
		}
		if !ok {
			return Event{}, s.err
		}
		v, err := parseValue(lit)
		if err != nil {
			return Event{}, err
		}
		return Event{DeviceID: deviceID, Stream: stream, TS: now.UnixMilli(), Value: v, TSAssigned: true}, nil
	}
	if s.i >= len(payload) {
		return Event{}, s.eof()
	}
	if payload[s.i] != '{' {
		return Event{}, s.notContainer("a JSON object or number")
	}
	ev, err := s.parseObject(now, lim, &topic)
	if err != nil {
		return Event{}, err
	}
	return ev, nil
}

// ValidName reports why a device_id/stream/id string is not acceptable ("" if ok) — exported
// so the MQTT topic parser can check topic segments with the same rule. The reason reads
// after a subject, e.g. "must not contain '/' (reserved in MQTT topics)".
func ValidName(s string) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	return checkName(s)
}

// checkName applies the name rule to UTF-8 text.
func checkName[T string | []byte](s T) string {
	if len(s) == 0 {
		return "must not be empty"
	}
	if len(s) > MaxNameLen {
		return fmt.Sprintf("must be at most %d bytes, got %d", MaxNameLen, len(s))
	}
	if len(s) == 1 && s[0] == '*' {
		return `must not be "*" (it stands for "every device" and for site-wide windows)`
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '/' || c == '+' || c == '#':
			return fmt.Sprintf("must not contain %q (reserved in MQTT topics)", c)
		case c < 0x20 || c == 0x7f:
			return fmt.Sprintf("must not contain control character %U", c)
		case c == 0xc2 && i+1 < len(s) && s[i+1] < 0xa0: // C1 control, U+0080..U+009F
			return fmt.Sprintf("must not contain control character %U", rune(s[i+1]))
		}
	}
	return ""
}

// checkTagKey applies the tag key rule to UTF-8 text.
func checkTagKey(k []byte) string {
	if len(k) == 0 {
		return "tag key must not be empty"
	}
	if len(k) > MaxTagKeyLen {
		return fmt.Sprintf("tag key %s is %d bytes (max %d)", quoteTrunc(k), len(k), MaxTagKeyLen)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c < 0x20 || c == 0x7f || (c == 0xc2 && i+1 < len(k) && k[i+1] < 0xa0) {
			return fmt.Sprintf("tag key %s must not contain control characters", quoteTrunc(k))
		}
	}
	return ""
}

// quoteTrunc quotes b for an error message, cut to 64 bytes.
func quoteTrunc(b []byte) string {
	if len(b) > 64 {
		return strconv.Quote(string(b[:64])) + "..."
	}
	return strconv.Quote(string(b))
}

const (
	fDevice = iota
	fStream
	fTS
	fValue
	fID
	fTags
	nFields
)

// fieldNames is in the order errors are reported.
var fieldNames = [nFields]string{"device_id", "stream", "ts", "value", "id", "tags"}

const (
	stAbsent = iota
	stNull
	stPresent
)

// object collects the fields of one event object while it is scanned. A field's
// error is kept until the end so that a later duplicate key can replace it.
type object struct {
	ev    Event
	state [nFields]uint8
	err   [nFields]*Error
}

func (o *object) setErr(f int, r Reason, msg string) {
	o.err[f] = &Error{Field: fieldNames[f], Reason: r, Msg: msg}
}

func (o *object) typeErr(f int, want string, c byte) {
	o.setErr(f, ReasonType, "must be "+want+", got "+kindOf(c))
}

// finish checks the collected fields in report order. topic, when set, holds the
// MQTT topic's device_id and stream, which fill absent fields and must equal
// present ones.
func (o *object) finish(nowMS int64, topic *[2]string) (Event, *Error) {
	for f := range nFields {
		if o.err[f] != nil {
			return Event{}, o.err[f]
		}
		switch f {
		case fDevice, fStream:
			dst := &o.ev.DeviceID
			if f == fStream {
				dst = &o.ev.Stream
			}
			switch {
			case topic != nil && o.state[f] != stPresent:
				*dst = topic[f]
			case topic != nil && *dst != topic[f]:
				o.setErr(f, ReasonInvalid, fmt.Sprintf("%s %q does not match topic %s %q",
					fieldNames[f], *dst, topicWord[f], topic[f]))
				return Event{}, o.err[f]
			case o.state[f] == stAbsent:
				o.setErr(f, ReasonMissing, "required")
				return Event{}, o.err[f]
			case o.state[f] == stNull:
				o.setErr(f, ReasonType, "must be a string, got null")
				return Event{}, o.err[f]
			}
		case fTS:
			if o.state[f] != stPresent {
				o.ev.TS = nowMS
				o.ev.TSAssigned = true
			}
		case fValue:
			if o.state[f] == stAbsent {
				o.setErr(f, ReasonMissing, "required")
				return Event{}, o.err[f]
			}
		}
	}
	return o.ev, nil
}

var topicWord = [2]string{"device", "stream"}

// scanner reads JSON from b. The first syntax error is kept in err and every
// method reports failure by returning false (or ok == false).
type scanner struct {
	b     []byte
	i     int
	depth int
	buf   []byte // unescaped strings; reused across values
	err   *Error
	last  [2]string // the previous device_id and stream, reused when repeated
}

func (s *scanner) init(b []byte) {
	s.b, s.i, s.depth, s.err = b, 0, 0, nil
}

// parseObject decodes the object at s.i, which must be followed by nothing but
// whitespace, and validates it.
func (s *scanner) parseObject(now time.Time, lim Limits, topic *[2]string) (Event, *Error) {
	s.ws()
	if s.i >= len(s.b) {
		return Event{}, s.eof()
	}
	if s.b[s.i] != '{' {
		return Event{}, s.notContainer("a JSON object")
	}
	var o object
	nowMS := now.UnixMilli()
	if !s.object(&o, nowMS, lim) {
		return Event{}, s.err
	}
	s.ws()
	if s.i < len(s.b) {
		s.fail("after top-level value")
		return Event{}, s.err
	}
	return o.finish(nowMS, topic)
}

// parseLines decodes NDJSON: one object per non-blank line.
func (s *scanner) parseLines(now time.Time, lim Limits) ([]Event, []Rejection, error) {
	body := s.b
	// One event per line, but no more than the shortest valid event fits: a
	// body of newlines must not allocate 80 bytes per byte.
	const minLen = len(`{"device_id":"d","stream":"s","value":0}` + "\n")
	evs := make([]Event, 0, min(bytes.Count(body, []byte{'\n'})+1, len(body)/minLen+1))
	var rejs []Rejection
	idx := 0
	for len(body) > 0 {
		line := body
		if n := bytes.IndexByte(body, '\n'); n >= 0 {
			line, body = body[:n], body[n+1:]
		} else {
			body = nil
		}
		if blank(line) {
			continue
		}
		s.init(line)
		ev, err := s.parseObject(now, lim, nil)
		if err != nil {
			if len(rejs) == MaxRejections {
				return nil, nil, tooManyRejections(rejs)
			}
			rejs = append(rejs, Rejection{Index: idx, Err: err})
		} else {
			evs = append(evs, ev)
		}
		idx++
	}
	return evs, rejs, nil
}

func tooManyRejections(rejs []Rejection) *Error {
	return &Error{Reason: ReasonMalformed, Msg: fmt.Sprintf(
		"more than %d invalid events, body refused; the first, at index %d: %v", MaxRejections, rejs[0].Index, rejs[0].Err)}
}

// parseArray decodes a JSON array of objects at s.i. A syntax error anywhere
// fails the whole array.
func (s *scanner) parseArray(now time.Time, lim Limits) ([]Event, []Rejection, *Error) {
	var evs []Event
	var rejs []Rejection
	nowMS := now.UnixMilli()
	s.i++ // '['
	s.depth++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
	} else {
		for idx := 0; ; idx++ {
			s.ws()
			if s.i >= len(s.b) {
				return nil, nil, s.eof()
			}
			if c := s.b[s.i]; c == '{' {
				var o object
				if !s.object(&o, nowMS, lim) {
					return nil, nil, s.err
				}
				if ev, err := o.finish(nowMS, nil); err != nil {
					if len(rejs) == MaxRejections {
						return nil, nil, tooManyRejections(rejs)
					}
					rejs = append(rejs, Rejection{Index: idx, Err: err})
				} else {
					evs = append(evs, ev)
				}
			} else {
				if !s.skip() {
					return nil, nil, s.err
				}
				if len(rejs) == MaxRejections {
					return nil, nil, tooManyRejections(rejs)
				}
				rejs = append(rejs, Rejection{Index: idx, Err: &Error{Reason: ReasonMalformed,
					Msg: "array element must be a JSON object, got " + kindOf(c)}})
			}
			s.ws()
			if s.i < len(s.b) && s.b[s.i] == ',' {
				s.i++
				continue
			}
			if s.i < len(s.b) && s.b[s.i] == ']' {
				s.i++
				break
			}
			s.fail("after array element")
			return nil, nil, s.err
		}
	}
	s.depth--
	s.ws()
	if s.i < len(s.b) {
		s.fail("after top-level value")
		return nil, nil, s.err
	}
	return evs, rejs, nil
}

// object decodes the event object at s.i (a '{') into o.
func (s *scanner) object(o *object, nowMS int64, lim Limits) bool {
	if !s.enter() {
		return false
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return true
	}
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.fail("looking for beginning of object key string")
		}
		s.buf = s.buf[:0]
		key, _, ok := s.str()
		if !ok || !s.colon() {
			return false
		}
		if s.i >= len(s.b) {
			return s.failEOF()
		}
		switch string(key) {
		case "device_id":
			ok = s.nameField(o, fDevice, &o.ev.DeviceID)
		case "stream":
			ok = s.nameField(o, fStream, &o.ev.Stream)
		case "ts":
			ok = s.tsField(o, nowMS, lim)
		case "value":
			ok = s.valueField(o)
		case "id":
			ok = s.nameField(o, fID, &o.ev.ID)
		case "tags":
			ok = s.tagsField(o)
		default:
			ok = s.skip()
		}
		if !ok {
			return false
		}
		s.ws()
		if s.i < len(s.b) {
			switch s.b[s.i] {
			case ',':
				s.i++
				s.ws()
				continue
			case '}':
				s.i++
				s.depth--
				return true
			}
		}
		return s.fail("after object key:value pair")
	}
}

// colon consumes whitespace, ':' and whitespace after an object key.
func (s *scanner) colon() bool {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return s.fail("after object key")
	}
	s.i++
	s.ws()
	return true
}

// nameField decodes a device_id, stream or id value into dst.
func (s *scanner) nameField(o *object, f int, dst *string) bool {
	o.err[f] = nil
	*dst = ""
	switch c := s.b[s.i]; c {
	case '"':
		s.buf = s.buf[:0]
		v, valid, ok := s.str()
		if !ok {
			return false
		}
		o.state[f] = stPresent
		if !valid {
			o.setErr(f, ReasonInvalid, "must be valid UTF-8")
		} else if why := checkName(v); why != "" {
			o.setErr(f, ReasonInvalid, why)
		} else if f <= fStream && string(v) == s.last[f] {
			*dst = s.last[f] // batches repeat names: save the allocation
		} else {
			*dst = string(v)
			if f <= fStream {
				s.last[f] = *dst
			}
		}
		return true
	case 'n':
		o.state[f] = stNull
		return s.lit("null")
	default:
		o.state[f] = stPresent
		o.typeErr(f, "a string", c)
		return s.skip()
	}
}

func (s *scanner) tsField(o *object, nowMS int64, lim Limits) bool {
	o.err[fTS] = nil
	o.state[fTS] = stPresent
	switch c := s.b[s.i]; {
	case c == '"':
		s.buf = s.buf[:0]
		v, valid, ok := s.str()
		if !ok {
			return false
		}
		ms, parsed := parseRFC3339(v)
		if !valid || !parsed {
			o.setErr(fTS, ReasonInvalid, "must be an RFC 3339 time or integer Unix milliseconds, got "+quoteTrunc(v))
			return true
		}
		o.ev.TS = ms
		o.checkTS(nowMS, lim, nil)
		return true
	case c == '-' || isDigit(c):
		lit, isInt, ok := s.number()
		if !ok {
			return false
		}
		if !isInt {
			o.setErr(fTS, ReasonInvalid, "epoch timestamps are integer milliseconds, got "+string(lit))
			return true
		}
		ms, inRange := parseInt(lit)
		if !inRange {
			o.setErr(fTS, ReasonInvalid, string(lit)+" is out of range; epoch timestamps are milliseconds")
			return true
		}
		o.ev.TS = ms
		o.checkTS(nowMS, lim, lit)
		return true
	case c == 'n':
		o.state[fTS] = stNull
		return s.lit("null")
	default:
		o.typeErr(fTS, "an RFC 3339 string or integer Unix milliseconds", c)
		return s.skip()
	}
}

// checkTS bounds o.ev.TS to [2000-01-01, now+MaxFuture]. epoch is the literal
// when ts was given as a number.
func (o *object) checkTS(nowMS int64, lim Limits, epoch []byte) {
	ts := o.ev.TS
	maxF := lim.maxFuture()
	future := ts > addSat(nowMS, maxF.Milliseconds())
	if !future && ts >= minTS {
		return
	}
	what, hint := fmtMillis(ts), ""
	if epoch != nil {
		what = string(epoch) + " (" + what + ")"
		hint = "; epoch timestamps are milliseconds"
	}
	if future {
		o.setErr(fTS, ReasonFuture, fmt.Sprintf("%s is %s in the future (limit %s)%s",
			what, fmtAhead(addSat(ts, -nowMS)), maxF, hint))
	} else {
		o.setErr(fTS, ReasonPast, fmt.Sprintf("%s is before 2000-01-01%s", what, hint))
	}
}

// addSat returns a+b, saturated to the int64 range.
func addSat(a, b int64) int64 {
	c := a + b
	if (c > a) != (b > 0) {
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return c
}

// fmtAhead renders a positive number of milliseconds coarsely: "4y", "12d", "3h5m0s".
func fmtAhead(ms int64) string {
	const day = 24 * 3600 * 1000
	switch {
	case ms >= 365*day:
		return strconv.FormatInt(ms/(365*day), 10) + "y"
	case ms >= 2*day:
		return strconv.FormatInt(ms/day, 10) + "d"
	default:
		return (time.Duration(ms) * time.Millisecond).Truncate(time.Second).String()
	}
}

func fmtMillis(ms int64) string {
	return string(appendMillis(nil, ms))
}

// appendMillis appends ms as an RFC 3339 UTC time with milliseconds, as
// time.Time.AppendFormat would with layout 2006-01-02T15:04:05.000Z07:00.
func appendMillis(dst []byte, ms int64) []byte {
	const dayMS = 86400 * 1000
	// 0000-01-01 .. 9999-12-31, where the layout is fixed width
	if ms < -62167219200000 || ms >= 253402300800000 {
		return time.UnixMilli(ms).UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	}
	days, rem := ms/dayMS, ms%dayMS
	if rem < 0 {
		days, rem = days-1, rem+dayMS
	}
	y, m, d := civilFromDays(days)
	dst = append(dst, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-')
	dst = append2(dst, m, '-')
	dst = append2(dst, d, 'T')
	dst = append2(dst, int(rem/3600000), ':')
	dst = append2(dst, int(rem/60000%60), ':')
	dst = append2(dst, int(rem/1000%60), '.')
	f := int(rem % 1000)
	return append(dst, byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10), 'Z')
}

func append2(dst []byte, v int, sep byte) []byte {
	return append(dst, byte('0'+v/10), byte('0'+v%10), sep)
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(z int64) (y, m, d int) {
	z += 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := int(z - era*146097)
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	m = mp + 3
	if m > 12 {
		m -= 12
	}
	y = yoe + int(era)*400
	if m <= 2 {
		y++
	}
	return y, m, d
}

func (s *scanner) valueField(o *object) bool {
	o.err[fValue] = nil
	o.state[fValue] = stPresent
	c := s.b[s.i]
	if c != '-' && !isDigit(c) {
		o.typeErr(fValue, "a number", c)
		return s.skip()
	}
	lit, _, ok := s.number()
	if !ok {
		return false
	}
	v, err := parseValue(lit)
	if err != nil {
		o.err[fValue] = err
	} else {
		o.ev.Value = v
	}
	return true
}

// parseValue converts a JSON number literal to a finite float64.
func parseValue(lit []byte) (float64, *Error) {
	v, err := strconv.ParseFloat(string(lit), 64)
	if err != nil { // only ErrRange: lit is valid JSON
		return 0, &Error{Field: "value", Reason: ReasonInvalid, Msg: string(lit[:min(len(lit), 64)]) + " is out of range for a float64"}
	}
	return v, nil
}

// parseInt converts a JSON integer literal; ok is false if it overflows int64.
func parseInt(lit []byte) (int64, bool) {
	neg := lit[0] == '-'
	d := lit
	if neg {
		d = d[1:]
	}
	if len(d) > 18 {
		v, err := strconv.ParseInt(string(lit), 10, 64)
		return v, err == nil
	}
	var v int64
	for _, c := range d {
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

func (s *scanner) tagsField(o *object) bool {
	o.err[fTags] = nil
	o.ev.Tags = nil
	c := s.b[s.i]
	if c == 'n' {
		o.state[fTags] = stNull
		return s.lit("null")
	}
	o.state[fTags] = stPresent
	if c != '{' {
		o.typeErr(fTags, "an object", c)
		return s.skip()
	}
	if !s.enter() {
		return false
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return true
	}
	for {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return s.fail("looking for beginning of object key string")
		}
		s.buf = s.buf[:0]
		key, keyValid, ok := s.str()
		if !ok || !s.colon() {
			return false
		}
		if s.i >= len(s.b) {
			return s.failEOF()
		}
		if o.err[fTags] == nil {
			ok = s.tag(o, key, keyValid)
		} else {
			ok = s.skip()
		}
		if !ok {
			return false
		}
		s.ws()
		if s.i < len(s.b) {
			switch s.b[s.i] {
			case ',':
				s.i++
				s.ws()
				continue
			case '}':
				s.i++
				s.depth--
				return true
			}
		}
		return s.fail("after object key:value pair")
	}
}

// tag decodes the value of one tag entry and adds it to o.ev.Tags.
func (s *scanner) tag(o *object, key []byte, keyValid bool) bool {
	why := ""
	if !keyValid {
		why = "tag key " + quoteTrunc(key) + " must be valid UTF-8"
	} else {
		why = checkTagKey(key)
	}
	if why != "" {
		o.setErr(fTags, ReasonInvalid, why)
		return s.skip()
	}
	c := s.b[s.i]
	if c != '"' {
		o.err[fTags] = &Error{Field: "tags." + string(key), Reason: ReasonType, Msg: "must be a string, got " + kindOf(c)}
		return s.skip()
	}
	v, valid, ok := s.str()
	if !ok {
		return false
	}
	switch {
	case !valid:
		o.err[fTags] = &Error{Field: "tags." + string(key), Reason: ReasonInvalid, Msg: "must be valid UTF-8"}
	case len(v) > MaxTagValueLen:
		o.err[fTags] = &Error{Field: "tags." + string(key), Reason: ReasonInvalid,
			Msg: fmt.Sprintf("must be at most %d bytes, got %d", MaxTagValueLen, len(v))}
	default:
		if o.ev.Tags == nil {
			o.ev.Tags = make(map[string]string, 4)
		}
		o.ev.Tags[string(key)] = string(v)
		if len(o.ev.Tags) > MaxTags {
			o.setErr(fTags, ReasonInvalid, fmt.Sprintf("more than %d tags", MaxTags))
		}
	}
	return true
}

// fail records a syntax error at s.i: the byte there is unexpected in the
// position described by where, or the input ended.
func (s *scanner) fail(where string) bool {
	if s.err != nil {
		return false
	}
	if s.i >= len(s.b) {
		s.eof()
		return false
	}
	s.err = &Error{Reason: ReasonMalformed,
		Msg: fmt.Sprintf("malformed JSON at byte %d: invalid character %s %s", s.i, quoteChar(s.b[s.i]), where)}
	return false
}

// eof records and returns an unexpected end of input error.
func (s *scanner) eof() *Error {
	if s.err == nil {
		s.i = len(s.b)
		s.err = &Error{Reason: ReasonMalformed,
			Msg: fmt.Sprintf("malformed JSON at byte %d: unexpected end of JSON input", len(s.b))}
	}
	return s.err
}

func (s *scanner) failEOF() bool {
	s.eof()
	return false
}

// notContainer returns the error for a top-level value at s.i that is not the
// kind wanted.
// A value that is not even valid JSON gets the syntax error instead.
func (s *scanner) notContainer(want string) *Error {
	k := kindOf(s.b[s.i])
	if k == "" || !s.skip() {
		s.fail("looking for beginning of value")
		return s.err
	}
	return &Error{Reason: ReasonMalformed, Msg: "expected " + want + ", got " + k}
}

func quoteChar(c byte) string {
	if c >= 0x20 && c < 0x7f && c != '\'' {
		return "'" + string(c) + "'"
	}
	return fmt.Sprintf("'\\x%02x'", c)
}

// kindOf names the JSON type of a value starting with c, or "" if no value can.
func kindOf(c byte) string {
	switch {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "boolean"
	case c == 'n':
		return "null"
	case c == '-' || isDigit(c):
		return "number"
	}
	return ""
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// blank reports whether b holds only JSON whitespace.
func blank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// multiLine reports whether b has non-blank text on at least two lines.
func multiLine(b []byte) bool {
	n := 0
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if !blank(line) {
			if n++; n == 2 {
				return true
			}
		}
	}
	return false
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// enter consumes the '[' or '{' at s.i, one level deeper.
func (s *scanner) enter() bool {
	s.depth++
	if s.depth > maxDepth {
		s.err = &Error{Reason: ReasonMalformed,
			Msg: fmt.Sprintf("malformed JSON at byte %d: exceeded max depth %d", s.i, maxDepth)}
		return false
	}
	s.i++
	return true
}

// lit consumes the literal word (true, false or null) at s.i.
func (s *scanner) lit(word string) bool {
	for j := 0; j < len(word); j++ {
		if s.i >= len(s.b) {
			return s.failEOF()
		}
		if s.b[s.i] != word[j] {
			return s.fail("in literal " + word)
		}
		s.i++
	}
	return true
}

// number consumes the number at s.i and returns its literal; isInt reports that
// it has neither fraction nor exponent.
func (s *scanner) number() (lit []byte, isInt bool, ok bool) {
	b, i := s.b, s.i
	start := i
	if b[i] == '-' {
		i++
	}
	digits := func(what string) bool {
		if i >= len(b) || !isDigit(b[i]) {
			s.i = i
			return s.fail(what)
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		return true
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits("in numeric literal"):
		return nil, false, false
	}
	isInt = true
	if i < len(b) && b[i] == '.' {
		i++
		isInt = false
		if !digits("after decimal point in numeric literal") {
			return nil, false, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		isInt = false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits("in exponent of numeric literal") {
			return nil, false, false
		}
	}
	s.i = i
	return b[start:i], isInt, true
}

// str consumes the string at s.i (a '"') and returns its decoded content. The
// result aliases the input if the literal has no escapes, and otherwise is
// appended to s.buf. valid is false if the content is not valid UTF-8 or an
// escape names an unpaired surrogate (decoded as U+FFFD).
func (s *scanner) str() (v []byte, valid bool, ok bool) {
	b := s.b
	i := s.i + 1
	start := i
	var or byte // all raw bytes OR'ed: >= 0x80 if any is not ASCII
	for i < len(b) {
		c := b[i]
		if c == '"' {
			s.i = i + 1
			v = b[start:i]
			return v, or < 0x80 || utf8.Valid(v), true
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			s.i = i
			return nil, false, s.fail("in string literal")
		}
		or |= c
		i++
	}
	base := len(s.buf)
	s.buf = append(s.buf, b[start:i]...)
	valid = true
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			v = s.buf[base:]
			return v, valid && (or < 0x80 || utf8.Valid(v)), true
		case c < 0x20:
			s.i = i
			return nil, false, s.fail("in string literal")
		case c != '\\':
			or |= c
			s.buf = append(s.buf, c)
			i++
			continue
		}
		i++ // backslash
		if i >= len(b) {
			break
		}
		switch e := b[i]; e {
		case '"', '\\', '/':
			s.buf = append(s.buf, e)
		case 'b':
			s.buf = append(s.buf, '\b')
		case 'f':
			s.buf = append(s.buf, '\f')
		case 'n':
			s.buf = append(s.buf, '\n')
		case 'r':
			s.buf = append(s.buf, '\r')
		case 't':
			s.buf = append(s.buf, '\t')
		case 'u':
			r, n := hex4(b[i+1:])
			if n < 4 {
				s.i = i + 1 + n
				return nil, false, s.fail("in \\u hexadecimal character escape")
			}
			i += 4
			if utf16.IsSurrogate(r) {
				// A high surrogate pairs with an immediately following \u low
				// surrogate; anything else leaves it unpaired.
				if r < 0xdc00 && i+2 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
					if r2, n2 := hex4(b[i+3:]); n2 == 4 && 0xdc00 <= r2 && r2 < 0xe000 {
						r = utf16.DecodeRune(r, r2)
						i += 6
						s.buf = utf8.AppendRune(s.buf, r)
						break
					}
				}
				r = utf8.RuneError
				valid = false
			}
			s.buf = utf8.AppendRune(s.buf, r)
		default:
			s.i = i
			return nil, false, s.fail("in string escape code")
		}
		i++
	}
	s.eof()
	return nil, false, false
}

// hex4 decodes up to four hex digits at the start of b; n < 4 means b[n] is not
// a hex digit or the input ended.
func hex4(b []byte) (r rune, n int) {
	for n = 0; n < 4; n++ {
		if n >= len(b) || !isHex(b[n]) {
			return 0, n
		}
		c := b[n]
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r, 4
}

// skip consumes one JSON value of any kind, checking only its syntax.
func (s *scanner) skip() bool {
	if s.i >= len(s.b) {
		return s.failEOF()
	}
	switch c := s.b[s.i]; c {
	case '"':
		return s.skipString()
	case '{', '[':
		return s.skipContainer(c)
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	default:
		if c == '-' || isDigit(c) {
			_, _, ok := s.number()
			return ok
		}
		return s.fail("looking for beginning of value")
	}
}

func (s *scanner) skipContainer(open byte) bool {
	if !s.enter() {
		return false
	}
	closer := byte(']')
	if open == '{' {
		closer = '}'
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == closer {
		s.i++
		s.depth--
		return true
	}
	for {
		if open == '{' {
			if s.i >= len(s.b) || s.b[s.i] != '"' {
				return s.fail("looking for beginning of object key string")
			}
			if !s.skipString() || !s.colon() {
				return false
			}
		}
		if !s.skip() {
			return false
		}
		s.ws()
		if s.i < len(s.b) {
			switch s.b[s.i] {
			case ',':
				s.i++
				s.ws()
				continue
			case closer:
				s.i++
				s.depth--
				return true
			}
		}
		if open == '{' {
			return s.fail("after object key:value pair")
		}
		return s.fail("after array element")
	}
}

// skipString consumes the string at s.i (a '"'), checking its escapes.
func (s *scanner) skipString() bool {
	b := s.b
	for i := s.i + 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			return true
		case c < 0x20:
			s.i = i
			return s.fail("in string literal")
		case c == '\\':
			i++
			if i >= len(b) {
				break
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if _, n := hex4(b[i+1:]); n < 4 {
					s.i = i + 1 + n
					return s.fail("in \\u hexadecimal character escape")
				}
				i += 4
			default:
				s.i = i
				return s.fail("in string escape code")
			}
		}
	}
	return s.failEOF()
}

// AppendJSON appends the event as a JSON object for query responses:
//
//	{"device_id":..,"stream":..,"ts":"2026-11-26T20:48:15.123Z","value":21.5,"id":..,"tags":{..},"received_at":".."}
//
// id and tags are left out when empty, tags are in key order, and times are RFC
// 3339 UTC with milliseconds. A non-finite value (never in a valid event) is
// written as null. For a valid event, ParseObject of the output gives the event
// back without Received.
func (e *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"device_id":`...)
	dst = appendJSONString(dst, e.DeviceID)
	dst = append(dst, `,"stream":`...)
	dst = appendJSONString(dst, e.Stream)
	dst = append(dst, `,"ts":"`...)
	dst = appendMillis(dst, e.TS)
	dst = append(dst, `","value":`...)
	dst = appendJSONFloat(dst, e.Value)
	if e.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendJSONString(dst, e.ID)
	}
	if len(e.Tags) > 0 {
		var arr [MaxTags]string
		keys := arr[:0]
		for k := range e.Tags {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, `,"tags":{`...)
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSONString(dst, e.Tags[k])
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"received_at":"`...)
	dst = appendMillis(dst, e.Received)
	return append(dst, `"}`...)
}

// appendJSONFloat formats v as encoding/json does; the text parses back to the
// same bits.
func appendJSONFloat(dst []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, "null"...)
	}
	format := byte('f')
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, v, format, -1, 64)
	if format == 'e' { // e-07 → e-7
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' { // valid JSON, but not in JavaScript strings
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// parseRFC3339 converts an RFC 3339 time with upper-case T and Z, as accepted by
// time.Parse(time.RFC3339, ...) in its strict form, to Unix milliseconds.
// Fractional seconds past milliseconds are truncated.
func parseRFC3339(b []byte) (int64, bool) {
	if len(b) < len("2006-01-02T15:04:05Z") {
		return 0, false
	}
	ok := true
	num := func(p []byte, lo, hi int) int {
		n := 0
		for _, c := range p {
			if !isDigit(c) {
				ok = false
				return lo
			}
			n = n*10 + int(c-'0')
		}
		if n < lo || n > hi {
			ok = false
		}
		return n
	}
	year := num(b[0:4], 0, 9999)
	month := num(b[5:7], 1, 12)
	day := num(b[8:10], 1, 31)
	hour := num(b[11:13], 0, 23)
	minute := num(b[14:16], 0, 59)
	sec := num(b[17:19], 0, 59)
	if !ok || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' ||
		day > daysIn(month, year) {
		return 0, false
	}
	b = b[19:]
	ms := 0
	if len(b) >= 2 && b[0] == '.' && isDigit(b[1]) {
		n := 1
		for ; n < len(b) && isDigit(b[n]); n++ {
			if n <= 3 {
				ms = ms*10 + int(b[n]-'0')
			}
		}
		for k := n; k <= 3; k++ {
			ms *= 10
		}
		b = b[n:]
	}
	offset := 0
	switch {
	case len(b) == 1 && b[0] == 'Z':
	case len(b) == 6 && (b[0] == '+' || b[0] == '-') && b[3] == ':':
		offset = (num(b[1:3], 0, 23)*60 + num(b[4:6], 0, 59)) * 60
		if b[0] == '-' {
			offset = -offset
		}
		if !ok {
			return 0, false
		}
	default:
		return 0, false
	}
	secs := daysFromCivil(year, month, day)*86400 + int64(hour*3600+minute*60+sec-offset)
	return secs*1000 + int64(ms), true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil returns the number of days from 1970-01-01 to the given
// proleptic Gregorian date, for years 0..9999.
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := (y+400)/400 - 1 // floor(y/400) for y >= -1
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}
