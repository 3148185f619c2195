package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// What the differential fuzz test holds the scanner to, against refParseObject
// (built on encoding/json):
//   - both accept or both reject every input;
//   - accepted events are identical, value compared bit for bit (so -0 != 0);
//   - rejections carry the same Reason and Field. Messages may differ.
// The scanner's own additions to encoding/json (exact key match, last duplicate
// wins, no replacement of invalid UTF-8 or unpaired surrogates in kept strings,
// error order) are restated independently in the reference.

var fuzzNow = time.Date(2026, 11, 26, 20, 48, 15, 123e6, time.UTC)

// refParseObject is ParseObject written the slow, obvious way.
func refParseObject(b []byte, now time.Time, lim Limits) (Event, *Error) {
	if !json.Valid(b) {
		return Event{}, &Error{Reason: ReasonMalformed, Msg: "invalid JSON"}
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); t[0] != '{' {
		return Event{}, &Error{Reason: ReasonMalformed, Msg: "not an object"}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	fail := func(field string, r Reason) (Event, *Error) {
		return Event{}, &Error{Field: field, Reason: r}
	}
	var ev Event
	for _, f := range []struct {
		name string
		dst  *string
	}{{"device_id", &ev.DeviceID}, {"stream", &ev.Stream}} {
		raw, ok := m[f.name]
		if !ok {
			return fail(f.name, ReasonMissing)
		}
		if raw[0] != '"' {
			return fail(f.name, ReasonType)
		}
		s, ok := refString(raw)
		if !ok || !refName(s) {
			return fail(f.name, ReasonInvalid)
		}
		*f.dst = s
	}

	nowMS := now.UnixMilli()
	ev.TS = nowMS
	if raw, ok := m["ts"]; ok && string(raw) != "null" {
		switch c := raw[0]; {
		case c == '"':
			s, ok := refString(raw)
			if !ok {
				return fail("ts", ReasonInvalid)
			}
			t, ok := refRFC3339(s)
			if !ok {
				return fail("ts", ReasonInvalid)
			}
			ev.TS = t.UnixMilli()
		case c == '-' || ('0' <= c && c <= '9'):
			if bytes.ContainsAny(raw, ".eE") {
				return fail("ts", ReasonInvalid)
			}
			v, err := strconv.ParseInt(string(raw), 10, 64)
			if err != nil {
				return fail("ts", ReasonInvalid)
			}
			ev.TS = v
		default:
			return fail("ts", ReasonType)
		}
		maxF := lim.MaxFuture
		if maxF <= 0 {
			maxF = 5 * time.Minute
		}
		if time.UnixMilli(ev.TS).After(now.Add(maxF)) {
			return fail("ts", ReasonFuture)
		}
		if time.UnixMilli(ev.TS).Before(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)) {
			return fail("ts", ReasonPast)
		}
	}

	raw, ok := m["value"]
	if !ok {
		return fail("value", ReasonMissing)
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return fail("value", ReasonType)
	}
	if err := json.Unmarshal(raw, &ev.Value); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			panic(err)
		}
		return fail("value", ReasonInvalid)
	}

	if raw, ok := m["id"]; ok && string(raw) != "null" {
		if raw[0] != '"' {
			return fail("id", ReasonType)
		}
		s, ok := refString(raw)
		if !ok || !refName(s) {
			return fail("id", ReasonInvalid)
		}
		ev.ID = s
	}

	if raw, ok := m["tags"]; ok && string(raw) != "null" {
		if raw[0] != '{' {
			return fail("tags", ReasonType)
		}
		// Entries in document order: decode key by key.
		dec := json.NewDecoder(bytes.NewReader(raw))
		if _, err := dec.Token(); err != nil {
			panic(err)
		}
		for dec.More() {
			start := dec.InputOffset()
			tok, err := dec.Token()
			if err != nil {
				panic(err)
			}
			rawKey := raw[start:dec.InputOffset()]
			rawKey = rawKey[bytes.IndexByte(rawKey, '"'):]
			var rv json.RawMessage
			if err := dec.Decode(&rv); err != nil {
				panic(err)
			}
			key := tok.(string)
			if !utf8.Valid(rawKey) || refLoneSurrogate(rawKey) || key == "" || len(key) > 64 ||
				strings.IndexFunc(key, unicode.IsControl) >= 0 {
				return fail("tags", ReasonInvalid)
			}
			if rv[0] != '"' {
				return fail("tags."+key, ReasonType)
			}
			v, ok := refString(rv)
			if !ok || len(v) > 256 {
				return fail("tags."+key, ReasonInvalid)
			}
			if ev.Tags == nil {
				ev.Tags = map[string]string{}
			}
			ev.Tags[key] = v
			if len(ev.Tags) > 32 {
				return fail("tags", ReasonInvalid)
			}
		}
	}
	return ev, nil
}

// refString decodes a raw JSON string; ok is false if it is not valid Unicode
// (encoding/json would have replaced something with U+FFFD).
func refString(raw []byte) (string, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		panic(err)
	}
	return s, utf8.Valid(raw) && !refLoneSurrogate(raw)
}

// refLoneSurrogate reports whether a raw JSON string has a \u escape naming an
// unpaired UTF-16 surrogate.
func refLoneSurrogate(raw []byte) bool {
	u4 := func(i int) (int, bool) { // the \uXXXX at raw[i:]
		if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 32)
		return int(v), err == nil
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		r, ok := u4(i)
		if !ok {
			i++ // some other escape: skip the escaped byte
			continue
		}
		switch {
		case 0xd800 <= r && r < 0xdc00:
			if r2, ok := u4(i + 6); ok && 0xdc00 <= r2 && r2 < 0xe000 {
				i += 11
				continue
			}
			return true
		case 0xdc00 <= r && r < 0xe000:
			return true
		}
		i += 5
	}
	return false
}

func refName(s string) bool {
	return len(s) >= 1 && len(s) <= 128 && !strings.ContainsAny(s, "/+#") &&
		strings.IndexFunc(s, unicode.IsControl) < 0
}

var rfc3339Shape = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-](\d\d):(\d\d))$`)

// refRFC3339 is time.Parse(time.RFC3339) without the leniency of its fallback
// path (one-digit hours, comma fractions, out-of-range offsets).
func refRFC3339(s string) (time.Time, bool) {
	m := rfc3339Shape.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, false
	}
	if m[3] != "" && (m[3] > "23" || m[4] > "59") {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, s)
	return t, err == nil
}

// requireSameEvent compares events field by field, the value by its bits.
// TSAssigned is left out: neither codec carries it (TestTSAssigned checks it).
func requireSameEvent(t testing.TB, want, got Event) {
	t.Helper()
	want.TSAssigned, got.TSAssigned = false, false
	require.Equal(t, math.Float64bits(want.Value), math.Float64bits(got.Value), "value %v vs %v", want.Value, got.Value)
	want.Value, got.Value = 0, 0
	require.Equal(t, want.Tags == nil, got.Tags == nil, "tags nil-ness")
	require.Equal(t, want, got)
}

// checkValidEvent asserts what every event the package accepts must satisfy, and
// that it survives both codecs.
func checkValidEvent(t testing.TB, ev Event, now time.Time) {
	t.Helper()
	require.Empty(t, ValidName(ev.DeviceID), "device_id %q", ev.DeviceID)
	require.Empty(t, ValidName(ev.Stream), "stream %q", ev.Stream)
	if ev.ID != "" {
		require.Empty(t, ValidName(ev.ID), "id %q", ev.ID)
	}
	require.False(t, math.IsNaN(ev.Value) || math.IsInf(ev.Value, 0))
	require.GreaterOrEqual(t, ev.TS, int64(minTS))
	require.LessOrEqual(t, ev.TS, now.Add(5*time.Minute).UnixMilli())
	require.True(t, ev.Tags == nil || len(ev.Tags) > 0, "empty non-nil tags")
	require.LessOrEqual(t, len(ev.Tags), MaxTags)
	for k, v := range ev.Tags {
		require.True(t, utf8.ValidString(k) && utf8.ValidString(v))
		require.True(t, len(k) >= 1 && len(k) <= MaxTagKeyLen && len(v) <= MaxTagValueLen)
	}
	require.Zero(t, ev.Received)

	js := ev.AppendJSON(nil)
	back, err := ParseObject(js, now, Limits{})
	require.NoError(t, err, "%s", js)
	requireSameEvent(t, ev, back)

	ev.Received = now.UnixMilli()
	bin := ev.AppendBinary(nil)
	dec, err := DecodeBinary(bin)
	require.NoError(t, err)
	requireSameEvent(t, ev, dec)
	require.Equal(t, bin, dec.AppendBinary(nil))
}

func addObjectSeeds(f *testing.F) {
	for _, s := range []string{
		`{"device_id":"dev-000123","stream":"temperature","ts":1764190000000,"value":21.53}`,
		`{"device_id":"d","stream":"s","value":1}`,
		`{"device_id":"d","stream":"s","ts":"2026-11-26T20:48:15.123Z","value":-0,"id":"m-1","tags":{"a":"b"}}`,
		`{"device_id":"d","stream":"s","ts":"2026-11-26T21:48:15.123456789+01:00","value":1e-7}`,
		` {"stream":"s","device_id":"d","value":1.5E+3,"extra":[{"x":[true,false,null,"\"]"]}],"z":{}} `,
		`{"device\u005fid":"\u00e9\ud83d\ude00","stream":"s\/t","value":0}`,
		`{"device_id":"d","stream":"s","value":1,"device_id":"e"}`,
		`{"device_id":"d","stream":"s","value":"1"}`,
		`{"device_id":"d","stream":"s","value":null}`,
		`{"device_id":"d","stream":"s","value":1e400}`,
		`{"device_id":"d","stream":"s","value":1,"ts":1764190000}`,
		`{"device_id":"d","stream":"s","value":1,"ts":1.5}`,
		`{"device_id":"d","stream":"s","value":1,"ts":99999999999999999999}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"2031-01-01T00:00:00Z"}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"2026-02-29T00:00:00Z"}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"2026-11-26T1:48:15Z"}`,
		`{"device_id":"d","stream":"s","value":1,"ts":true}`,
		`{"device_id":"d\ud800","stream":"s","value":1}`,
		"{\"device_id\":\"d\xff\",\"stream\":\"s\",\"value\":1}",
		`{"device_id":"a/b","stream":"s","value":1}`,
		`{"device_id":"\u0085","stream":"s","value":1}`,
		`{"device_id":"d","stream":"s","value":1,"tags":{"a":1}}`,
		`{"device_id":"d","stream":"s","value":1,"tags":{"":"x"}}`,
		`{"device_id":"d","stream":"s","value":1,"tags":{"k":"v","k":"w"}}`,
		`{"device_id":"d","stream":"s","value":1,"tags":[]}`,
		`{"device_id":"d","stream":"s","value":1,"id":""}`,
		`{"device_id":"d","stream":"s","value":1} x`,
		`{"device_id":"d","stream":"s","value":1,}`,
		`{"device_id":"d","stream":"s","value":01}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"2000-02-29T23:59:59.999+00:00"}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"1900-02-29T00:00:00Z"}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"2100-02-29T00:00:00Z"}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"2026-11-27T00:18:15.123+05:30"}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"2026-11-26T20:53:15.123Z"}`,
		`{"device_id":"d","stream":"s","value":1,"ts":"2026-11-26T20:53:15.124Z"}`,
		`{"device_id":"\udc00\udc00","stream":"\ud800\ud800","value":1}`,
		`{"device_id":"\ud83d\ude00\ud83d","stream":"\ud83dx","value":1}`,
		`{"device_id":"d","stream":"s","value":1,"x":"\u123","y":"\ud800"}`,
		`{"device_id":"d","stream":"s","value":1,"tags":{"\udc00":"a","b":"\ud800"}}`,
		`{"device_id":"d","stream":"s","value":1,"tags":{"a":"1","a":2}}`,
		`{"device_id":"d","stream":"s","value":1,"tags":{"a":"1"},"tags":{"b":"2"}}`,
		`{"device_id":"d","stream":"s","value":1,"tags":{"a":2},"tags":null}`,
		"{\"device_id\":\"\u00c2\u0085\",\"stream\":\"\xc2\x9f\xc2\xa0\",\"value\":1}",
		`{"device_id":"d","stream":"s","value":1,"id":null,"id":"\u0023"}`,
		`{"device_id":"d","stream":"s","value":-0.0e-0,"ts":-0}`,
		`{"device_id":"d","stream":"s","value":123456789012345678901234567890,"ts":9223372036854775807}`,
		`{"device_id":"d","stream":"s","value":4.9e-324,"ts":-9223372036854775808}`,
		`[{"device_id":"d"}]`,
		`null`,
		``,
		`{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	var tags []string
	for i := range MaxTags + 1 {
		tags = append(tags, fmt.Sprintf(`"k%d":"v"`, i))
	}
	for _, n := range []int{MaxTags, MaxTags + 1} {
		f.Add([]byte(`{"device_id":"d","stream":"s","value":1,"tags":{` + strings.Join(tags[:n], ",") + `}}`))
	}
	for _, n := range []int{maxDepth - 1, maxDepth} {
		f.Add([]byte(`{"device_id":"d","stream":"s","value":1,"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`))
	}
}

func FuzzParseObject(f *testing.F) {
	addObjectSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		checkAgainstRef(t, b)
	})
}

// FuzzParseObjectFields is FuzzParseObject with the object's structure fixed, so
// that mutations land in field values: each argument is spliced in as raw JSON
// text, and an empty one leaves its member out.
func FuzzParseObjectFields(f *testing.F) {
	f.Add(`"dev-1"`, `"temperature"`, `1764190000000`, `21.5`, `"k":"v"`, `"id":"m-1"`)
	f.Add(`"d"`, `"s"`, `"2000-02-29T00:00:00Z"`, `-0`, ``, `"x":{"y":["\u0041"]}`)
	f.Add(`"d"`, `"s"`, `"2100-02-29T00:00:00Z"`, `1e400`, `"a":"1","a":2`, ``)
	f.Add(`"\ud83d\ude00"`, `"\udc00\udc00"`, `"2026-11-26T20:48:15.1234+01:00"`, `"1"`, `"":""`, `"x":"\u123"`)
	f.Add(`null`, `5`, `1.5`, `null`, `"k\u0085":"v"`, `"device_id":"e"`)
	f.Fuzz(func(t *testing.T, dev, stream, ts, value, tags, extra string) {
		var b strings.Builder
		b.WriteByte('{')
		add := func(key, v string) {
			if v == "" {
				return
			}
			if b.Len() > 1 {
				b.WriteByte(',')
			}
			b.WriteString(key)
			b.WriteString(v)
		}
		add(`"device_id":`, dev)
		add(`"stream":`, stream)
		add(`"ts":`, ts)
		add(`"value":`, value)
		if tags != "" {
			add(`"tags":`, "{"+tags+"}")
		}
		add("", extra)
		b.WriteByte('}')
		checkAgainstRef(t, []byte(b.String()))
	})
}

// checkAgainstRef holds ParseObject to refParseObject on b.
func checkAgainstRef(t *testing.T, b []byte) {
	t.Helper()
	got, err := ParseObject(b, fuzzNow, Limits{})
	want, wantErr := refParseObject(b, fuzzNow, Limits{})
	if wantErr != nil {
		require.Error(t, err, "reference: %v %s", wantErr.Reason, wantErr.Field)
		var e *Error
		require.ErrorAs(t, err, &e)
		require.Equal(t, wantErr.Reason, e.Reason, "%v", err)
		require.Equal(t, wantErr.Field, e.Field, "%v", err)
		require.Equal(t, Event{}, got)
		return
	}
	require.NoError(t, err)
	requireSameEvent(t, want, got)
	checkValidEvent(t, got, fuzzNow)
}

func FuzzParseBatch(f *testing.F) {
	f.Add([]byte(`[{"device_id":"d","stream":"s","value":1},{"device_id":"d"},3,{"device_id":"d","stream":"s","value":2}]`), false)
	f.Add([]byte("{\"device_id\":\"d\",\"stream\":\"s\",\"value\":1}\n\n{bad\n \r\n{\"device_id\":\"d\",\"stream\":\"s\",\"value\":2}\n"), false)
	f.Add([]byte("{\"device_id\":\"d\",\"stream\":\"s\",\"value\":1}\r\n{\"value\":2}"), true)
	f.Add([]byte(`{"device_id":"d","stream":"s","value":1}`), false)
	f.Add([]byte(`{"device_id":"d","stream":"s","value":1`), false)
	f.Add([]byte(` [ ] `), false)
	f.Add([]byte(`[{"a":1},]`), false)
	f.Add([]byte(`"x"`), false)
	f.Add([]byte(``), true)
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		evs, rejs, err := ParseBatch(body, ndjson, fuzzNow, Limits{})
		if err != nil {
			require.False(t, ndjson, "NDJSON never fails as a whole")
			require.Nil(t, evs)
			require.Nil(t, rejs)
			var e *Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, ReasonMalformed, e.Reason)
		}
		for _, ev := range evs {
			checkValidEvent(t, ev, fuzzNow)
		}
		for i, r := range rejs {
			require.GreaterOrEqual(t, r.Index, 0)
			if i > 0 {
				require.Greater(t, r.Index, rejs[i-1].Index)
			}
			var e *Error
			require.ErrorAs(t, r.Err, &e)
		}

		// Each element must fare in the batch as it does alone.
		var elems [][]byte
		first := bytes.TrimLeft(body, " \t\r\n")
		switch {
		case ndjson:
			elems = refLines(body)
		case len(first) > 0 && first[0] == '[':
			var raws []json.RawMessage
			if json.Unmarshal(body, &raws) != nil {
				require.Error(t, err, "invalid array accepted")
				return
			}
			for _, r := range raws {
				elems = append(elems, r)
			}
		case len(first) > 0 && first[0] == '{':
			_, oneErr := ParseObject(body, fuzzNow, Limits{})
			var e *Error
			if oneErr == nil || errors.As(oneErr, &e) && e.Reason != ReasonMalformed {
				elems = [][]byte{body}
			} else if len(refLines(body)) >= 2 {
				elems = refLines(body)
			} else {
				require.Error(t, err)
				return
			}
		default:
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, len(elems), len(evs)+len(rejs))
		var nev, nrej int
		for i, el := range elems {
			ev, err := ParseObject(el, fuzzNow, Limits{})
			if err != nil {
				require.Less(t, nrej, len(rejs))
				require.Equal(t, i, rejs[nrej].Index)
				var want, got *Error
				require.ErrorAs(t, err, &want)
				require.ErrorAs(t, rejs[nrej].Err, &got)
				require.Equal(t, want.Reason, got.Reason)
				require.Equal(t, want.Field, got.Field)
				nrej++
				continue
			}
			require.Less(t, nev, len(evs))
			requireSameEvent(t, ev, evs[nev])
			nev++
		}
	})
}

// refLines returns the non-blank lines of b.
func refLines(b []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte{'\n'}) {
		if len(bytes.Trim(l, " \t\r")) > 0 {
			out = append(out, l)
		}
	}
	return out
}

func FuzzParseMQTT(f *testing.F) {
	f.Add("dev-1", "temperature", []byte(`21.5`))
	f.Add("dev-1", "temperature", []byte(` -0.5e3 `))
	f.Add("dev-1", "temperature", []byte(`{"value":1,"ts":1764190000000}`))
	f.Add("dev-1", "temperature", []byte(`{"device_id":"dev-1","stream":"temperature","value":1}`))
	f.Add("dev-1", "temperature", []byte(`{"device_id":"dev-2","value":1}`))
	f.Add("dev-1", "temperature", []byte(`{"device_id":null,"stream":null,"value":1}`))
	f.Add("dev-1", "temperature", []byte(`1e999`))
	f.Add("dev/1", "temperature", []byte(`1`))
	f.Add("dev-1", "t", []byte(`"21.5"`))
	f.Fuzz(func(t *testing.T, deviceID, stream string, payload []byte) {
		ev, err := ParseMQTT(deviceID, stream, payload, fuzzNow, Limits{})
		if err != nil {
			var e *Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, Event{}, ev)
		} else {
			require.Equal(t, deviceID, ev.DeviceID)
			require.Equal(t, stream, ev.Stream)
			checkValidEvent(t, ev, fuzzNow)
		}
		// A payload that is a complete event for this topic decodes the same way
		// through both entry points.
		if full, ferr := ParseObject(payload, fuzzNow, Limits{}); ferr == nil &&
			full.DeviceID == deviceID && full.Stream == stream {
			require.NoError(t, err)
			requireSameEvent(t, full, ev)
		}
	})
}

func FuzzDecodeBinary(f *testing.F) {
	evs := []Event{
		{DeviceID: "dev-000123", Stream: "temperature", TS: 1764190000000, Value: 21.53, Received: 1764190000123},
		{DeviceID: "d", Stream: "s", TS: -1, Value: math.Copysign(0, -1), ID: "m-1",
			Tags: map[string]string{"site": "north", "": "", "z": strings.Repeat("v", 256)}},
	}
	for _, ev := range evs {
		f.Add(ev.AppendBinary(nil))
	}
	f.Add([]byte{})
	f.Add([]byte{0x02, 0x00})
	f.Add([]byte{TypeEvent, flagTags, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'd', 1, 's', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeBinary(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnknownType), "%v", err)
			require.Equal(t, Event{}, ev)
			return
		}
		require.Equal(t, b, ev.AppendBinary(nil), "decoding is canonical: re-encoding gives the same bytes")
		back, err := DecodeBinary(ev.AppendBinary(nil))
		require.NoError(t, err)
		requireSameEvent(t, ev, back)
		// Query output for a stored event is JSON, whatever the event holds.
		require.True(t, json.Valid(ev.AppendJSON(nil)), "%s", ev.AppendJSON(nil))
	})
}

func TestRefTagsOrder(t *testing.T) {
	// The reference relies on json.Decoder offsets to see raw tag keys.
	_, err := refParseObject([]byte(`{"device_id":"d","stream":"s","value":1,"tags":{ "a" : "1" , "b\ud800":"2"}}`), fuzzNow, Limits{})
	require.NotNil(t, err)
	require.Equal(t, "tags", err.Field)
	ev, err := refParseObject([]byte(`{"device_id":"d","stream":"s","value":1,"tags":{ "a" : "1" , "b\u00e9":"2"}}`), fuzzNow, Limits{})
	require.Nil(t, err)
	require.True(t, maps.Equal(map[string]string{"a": "1", "bé": "2"}, ev.Tags))
}
