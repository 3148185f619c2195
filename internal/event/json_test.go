package event

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testNow is the node clock in the table tests: 2026-11-26T20:48:15.123Z.
var testNow = time.Date(2026, 11, 26, 20, 48, 15, 123e6, time.UTC)

const testNowMS = 1795726095123

func TestParseObjectValid(t *testing.T) {
	long := strings.Repeat("n", MaxNameLen)
	tags32 := map[string]string{}
	var tagsJSON []string
	for i := range MaxTags {
		k := fmt.Sprintf("k%02d", i)
		tags32[k] = "v"
		tagsJSON = append(tagsJSON, fmt.Sprintf("%q:\"v\"", k))
	}
	tests := []struct {
		name string
		in   string
		want Event
	}{
		{"typical", `{"device_id":"dev-000123","stream":"temperature","ts":1764190000000,"value":21.53}`,
			Event{DeviceID: "dev-000123", Stream: "temperature", TS: 1764190000000, Value: 21.53}},
		{"ts absent is now", `{"device_id":"d","stream":"s","value":1}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
		{"ts null is now", `{"device_id":"d","stream":"s","value":1,"ts":null}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
		{"rfc3339 Z millis", `{"device_id":"d","stream":"s","value":1,"ts":"2026-11-26T20:48:15.123Z"}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
		{"rfc3339 offset, nanos truncated", `{"device_id":"d","stream":"s","value":1,"ts":"2026-11-26T21:48:15.123999999+01:00"}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
		{"rfc3339 negative offset, one digit fraction", `{"device_id":"d","stream":"s","value":1,"ts":"2026-11-26T15:18:15.1-05:30"}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS - 23, Value: 1}},
		{"rfc3339 leap day", `{"device_id":"d","stream":"s","value":1,"ts":"2024-02-29T00:00:00Z"}`,
			Event{DeviceID: "d", Stream: "s", TS: time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC).UnixMilli(), Value: 1}},
		{"ts at future limit", fmt.Sprintf(`{"device_id":"d","stream":"s","value":1,"ts":%d}`, testNowMS+5*60*1000),
			Event{DeviceID: "d", Stream: "s", TS: testNowMS + 5*60*1000, Value: 1}},
		{"ts at 2000-01-01", `{"device_id":"d","stream":"s","value":1,"ts":946684800000}`,
			Event{DeviceID: "d", Stream: "s", TS: 946684800000, Value: 1}},
		{"value forms", `{"device_id":"d","stream":"s","value":-1.5E+3}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: -1500}},
		{"value underflow is zero", `{"device_id":"d","stream":"s","value":1e-400}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 0}},
		{"value max float", `{"device_id":"d","stream":"s","value":1.7976931348623157e308}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: math.MaxFloat64}},
		{"id and tags", `{"device_id":"d","stream":"s","value":1,"id":"m-1","tags":{"site":"north","note":"a\nb"}}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1, ID: "m-1", Tags: map[string]string{"site": "north", "note": "a\nb"}}},
		{"id and tags null", `{"device_id":"d","stream":"s","value":1,"id":null,"tags":null}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
		{"empty tags are none", `{"device_id":"d","stream":"s","value":1,"tags":{ }}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
		{"ts Feb 29 of 2000", `{"device_id":"d","stream":"s","value":1,"ts":"2000-02-29T00:00:00Z"}`,
			Event{DeviceID: "d", Stream: "s", TS: 951782400000, Value: 1}},
		{"32 tags", `{"device_id":"d","stream":"s","value":1,"tags":{` + strings.Join(tagsJSON, ",") + `}}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1, Tags: tags32}},
		{"duplicate tag key, last wins", `{"device_id":"d","stream":"s","value":1,"tags":{"k":"1","k":"2"}}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1, Tags: map[string]string{"k": "2"}}},
		{"escapes", `{"device_id":"\u00e9\ud83d\ude00x","stream":"a\"b\\c","value":1,"tags":{"\u006b":"\t\/\b\f\r"}}`,
			Event{DeviceID: "é😀x", Stream: `a"b\c`, TS: testNowMS, Value: 1, Tags: map[string]string{"k": "\t/\b\f\r"}}},
		{"escaped key matches", `{"device\u005fid":"d","stream":"s","value":1}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
		{"unicode name", `{"device_id":"温度計","stream":"température","value":1}`,
			Event{DeviceID: "温度計", Stream: "température", TS: testNowMS, Value: 1}},
		{"max length name", `{"device_id":"` + long + `","stream":"s","value":1}`,
			Event{DeviceID: long, Stream: "s", TS: testNowMS, Value: 1}},
		{"unknown fields skipped", `{"x":{"y":[1,-2.5e-3,true,false,null,"]}\"",{}]},"device_id":"d","z":[],"stream":"s","value":1,"Value":"x"}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
		{"duplicate key, last wins", `{"device_id":"a/b","stream":"s","value":"x","device_id":"d","value":2}`,
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 2}},
		{"whitespace", " \t\r\n{ \"device_id\" : \"d\" ,\n\"stream\":\"s\",\"value\" :\t1 } \r\n",
			Event{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseObject([]byte(tt.in), testNow, Limits{})
			require.NoError(t, err)
			requireSameEvent(t, tt.want, got)
		})
	}
}

func TestParseObjectNegativeZero(t *testing.T) {
	ev, err := ParseObject([]byte(`{"device_id":"d","stream":"s","value":-0}`), testNow, Limits{})
	require.NoError(t, err)
	require.True(t, math.Signbit(ev.Value))
}

func TestParseObjectErrors(t *testing.T) {
	obj := func(fields string) string { return `{"device_id":"d","stream":"s","value":1,` + fields + `}` }
	deep := func(n int) string {
		return `{"device_id":"d","stream":"s","value":1,"x":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`
	}
	var tags33 []string
	for i := range MaxTags + 1 {
		tags33 = append(tags33, fmt.Sprintf(`"k%02d":"v"`, i))
	}
	tests := []struct {
		name   string
		in     string
		lim    Limits
		field  string
		reason Reason
		msg    string // the whole Error(); "~" prefix: a substring of it
	}{
		// required fields, in report order
		{"empty object", `{}`, Limits{}, "device_id", ReasonMissing, `field "device_id": required`},
		{"stream missing", `{"device_id":"d","value":1}`, Limits{}, "stream", ReasonMissing, `field "stream": required`},
		{"value missing", `{"device_id":"d","stream":"s"}`, Limits{}, "value", ReasonMissing, `field "value": required`},
		{"order: device_id first", `{"value":"x","ts":true}`, Limits{}, "device_id", ReasonMissing, `field "device_id": required`},
		{"order: ts before value", `{"device_id":"d","stream":"s","value":"x","ts":true}`, Limits{}, "ts", ReasonType,
			`field "ts": must be an RFC 3339 string or integer Unix milliseconds, got boolean`},
		{"order: value before tags", `{"tags":5,"device_id":"d","stream":"s","value":null}`, Limits{}, "value", ReasonType,
			`field "value": must be a number, got null`},
		{"last duplicate is checked", `{"device_id":"d","stream":"s","value":1,"value":"1"}`, Limits{}, "value", ReasonType,
			`field "value": must be a number, got string`},
		{"key match is exact", `{"Device_ID":"d","stream":"s","value":1}`, Limits{}, "device_id", ReasonMissing, `field "device_id": required`},

		// names
		{"device_id number", `{"device_id":5,"stream":"s","value":1}`, Limits{}, "device_id", ReasonType, `field "device_id": must be a string, got number`},
		{"device_id null", `{"device_id":null,"stream":"s","value":1}`, Limits{}, "device_id", ReasonType, `field "device_id": must be a string, got null`},
		{"device_id object", `{"device_id":{"a":1},"stream":"s","value":1}`, Limits{}, "device_id", ReasonType, `field "device_id": must be a string, got object`},
		{"device_id empty", `{"device_id":"","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid, `field "device_id": must not be empty`},
		{"device_id too long", `{"device_id":"` + strings.Repeat("x", MaxNameLen+1) + `","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must be at most 128 bytes, got 129`},
		{"device_id slash", `{"device_id":"a/b","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must not contain '/' (reserved in MQTT topics)`},
		{"device_id plus", `{"device_id":"a+","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must not contain '+' (reserved in MQTT topics)`},
		{"device_id hash", `{"device_id":"#","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must not contain '#' (reserved in MQTT topics)`},
		{"device_id C0 control", `{"device_id":"a\u0001","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must not contain control character U+0001`},
		{"device_id DEL", `{"device_id":"a\u007f","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must not contain control character U+007F`},
		{"device_id C1 control", `{"device_id":"a` + "\u0085" + `","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must not contain control character U+0085`},
		{"device_id invalid UTF-8", "{\"device_id\":\"a\xff\",\"stream\":\"s\",\"value\":1}", Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must be valid UTF-8`},
		{"device_id UTF-8 surrogate", "{\"device_id\":\"a\xed\xa0\x80\",\"stream\":\"s\",\"value\":1}", Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must be valid UTF-8`},
		{"device_id lone high surrogate", `{"device_id":"a\ud800","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must be valid UTF-8`},
		{"device_id high surrogate then letter", `{"device_id":"\ud800\u0041","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must be valid UTF-8`},
		{"device_id two low surrogates", `{"device_id":"\udc00\udc00","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must be valid UTF-8`},
		{"device_id high surrogate at end", `{"device_id":"\ud83d\ude00\ud83d","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must be valid UTF-8`},
		{"device_id lone low surrogate", `{"device_id":"\udc00","stream":"s","value":1}`, Limits{}, "device_id", ReasonInvalid,
			`field "device_id": must be valid UTF-8`},
		{"stream bad", `{"device_id":"d","stream":"a/b","value":1}`, Limits{}, "stream", ReasonInvalid,
			`field "stream": must not contain '/' (reserved in MQTT topics)`},
		{"stream wrong type", `{"device_id":"d","stream":["s"],"value":1}`, Limits{}, "stream", ReasonType,
			`field "stream": must be a string, got array`},
		{"id wrong type", obj(`"id":7`), Limits{}, "id", ReasonType, `field "id": must be a string, got number`},
		{"id empty", obj(`"id":""`), Limits{}, "id", ReasonInvalid, `field "id": must not be empty`},
		{"id bad", obj(`"id":"x#1"`), Limits{}, "id", ReasonInvalid, `field "id": must not contain '#' (reserved in MQTT topics)`},

		// value
		{"value string", `{"device_id":"d","stream":"s","value":"21.5"}`, Limits{}, "value", ReasonType, `field "value": must be a number, got string`},
		{"value null", `{"device_id":"d","stream":"s","value":null}`, Limits{}, "value", ReasonType, `field "value": must be a number, got null`},
		{"value bool", `{"device_id":"d","stream":"s","value":true}`, Limits{}, "value", ReasonType, `field "value": must be a number, got boolean`},
		{"value array", `{"device_id":"d","stream":"s","value":[1]}`, Limits{}, "value", ReasonType, `field "value": must be a number, got array`},
		{"value overflow", `{"device_id":"d","stream":"s","value":1e400}`, Limits{}, "value", ReasonInvalid, `field "value": 1e400 is out of range for a float64`},
		{"value overflow negative", `{"device_id":"d","stream":"s","value":-2e308}`, Limits{}, "value", ReasonInvalid, `field "value": -2e308 is out of range for a float64`},

		// ts
		{"ts far future", obj(`"ts":"2031-01-01T00:00:00Z"`), Limits{}, "ts", ReasonFuture,
			`field "ts": 2031-01-01T00:00:00.000Z is 4y in the future (limit 5m0s)`},
		{"ts just past the limit", obj(`"ts":"2026-11-26T20:53:16.123Z"`), Limits{}, "ts", ReasonFuture,
			`field "ts": 2026-11-26T20:53:16.123Z is 5m1s in the future (limit 5m0s)`},
		{"ts one ms past the limit", obj(fmt.Sprintf(`"ts":%d`, testNowMS+5*60*1000+1)), Limits{}, "ts", ReasonFuture,
			`field "ts": 1795726395124 (2026-11-26T20:53:15.124Z) is 5m0s in the future (limit 5m0s); epoch timestamps are milliseconds`},
		{"ts days ahead, own limit", obj(`"ts":"2026-12-06T20:48:15.123Z"`), Limits{MaxFuture: time.Hour}, "ts", ReasonFuture,
			`field "ts": 2026-12-06T20:48:15.123Z is 10d in the future (limit 1h0m0s)`},
		{"ts microseconds", obj(`"ts":1795726095123000`), Limits{}, "ts", ReasonFuture,
			`~is 56885y in the future (limit 5m0s); epoch timestamps are milliseconds`},
		{"ts seconds", obj(`"ts":1764190000`), Limits{}, "ts", ReasonPast,
			`field "ts": 1764190000 (1970-01-21T10:03:10.000Z) is before 2000-01-01; epoch timestamps are milliseconds`},
		{"ts before 2000", obj(`"ts":"1999-12-31T23:59:59.999Z"`), Limits{}, "ts", ReasonPast,
			`field "ts": 1999-12-31T23:59:59.999Z is before 2000-01-01`},
		{"ts negative", obj(`"ts":-1`), Limits{}, "ts", ReasonPast,
			`field "ts": -1 (1969-12-31T23:59:59.999Z) is before 2000-01-01; epoch timestamps are milliseconds`},
		{"ts fraction", obj(`"ts":1764190000000.5`), Limits{}, "ts", ReasonInvalid,
			`field "ts": epoch timestamps are integer milliseconds, got 1764190000000.5`},
		{"ts exponent", obj(`"ts":1.76419e12`), Limits{}, "ts", ReasonInvalid,
			`field "ts": epoch timestamps are integer milliseconds, got 1.76419e12`},
		{"ts overflow", obj(`"ts":99999999999999999999`), Limits{}, "ts", ReasonInvalid,
			`field "ts": 99999999999999999999 is out of range; epoch timestamps are milliseconds`},
		{"ts not a time", obj(`"ts":"yesterday"`), Limits{}, "ts", ReasonInvalid,
			`field "ts": must be an RFC 3339 time or integer Unix milliseconds, got "yesterday"`},
		{"ts epoch as string", obj(`"ts":"1764190000000"`), Limits{}, "ts", ReasonInvalid,
			`field "ts": must be an RFC 3339 time or integer Unix milliseconds, got "1764190000000"`},
		{"ts no zone", obj(`"ts":"2026-11-26T20:48:15"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts space separator", obj(`"ts":"2026-11-26 20:48:15Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts lower-case z", obj(`"ts":"2026-11-26T20:48:15z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts one-digit hour", obj(`"ts":"2026-11-26T1:48:15Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts comma fraction", obj(`"ts":"2026-11-26T20:48:15,1Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts Feb 29 of 1900", obj(`"ts":"1900-02-29T00:00:00Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts Feb 29 of 2100", obj(`"ts":"2100-02-29T00:00:00Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts Apr 31", obj(`"ts":"2026-04-31T00:00:00Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts Feb 29 of non-leap year", obj(`"ts":"2026-02-29T00:00:00Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts hour 24", obj(`"ts":"2026-11-26T24:00:00Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts leap second", obj(`"ts":"2026-12-31T23:59:60Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts offset hour 24", obj(`"ts":"2026-11-26T20:48:15+24:00"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts dot without digits", obj(`"ts":"2026-11-26T20:48:15.Z"`), Limits{}, "ts", ReasonInvalid, `~must be an RFC 3339 time`},
		{"ts bool", obj(`"ts":false`), Limits{}, "ts", ReasonType,
			`field "ts": must be an RFC 3339 string or integer Unix milliseconds, got boolean`},
		{"ts object", obj(`"ts":{}`), Limits{}, "ts", ReasonType,
			`field "ts": must be an RFC 3339 string or integer Unix milliseconds, got object`},

		// tags
		{"tags array", obj(`"tags":[]`), Limits{}, "tags", ReasonType, `field "tags": must be an object, got array`},
		{"tags string", obj(`"tags":"a=b"`), Limits{}, "tags", ReasonType, `field "tags": must be an object, got string`},
		{"tag value number", obj(`"tags":{"ok":"x","floor":3}`), Limits{}, "tags.floor", ReasonType, `field "tags.floor": must be a string, got number`},
		{"tag value null", obj(`"tags":{"a":null}`), Limits{}, "tags.a", ReasonType, `field "tags.a": must be a string, got null`},
		{"tag value object", obj(`"tags":{"a":{"b":"c"}}`), Limits{}, "tags.a", ReasonType, `field "tags.a": must be a string, got object`},
		{"tag key empty", obj(`"tags":{"":"x"}`), Limits{}, "tags", ReasonInvalid, `field "tags": tag key must not be empty`},
		{"tag key too long", obj(`"tags":{"` + strings.Repeat("k", 65) + `":"x"}`), Limits{}, "tags", ReasonInvalid,
			`field "tags": tag key "` + strings.Repeat("k", 64) + `"... is 65 bytes (max 64)`},
		{"tag key control", obj(`"tags":{"a\nb":"x"}`), Limits{}, "tags", ReasonInvalid,
			`field "tags": tag key "a\nb" must not contain control characters`},
		{"tag key invalid UTF-8", obj(`"tags":{"a\udfff":"x"}`), Limits{}, "tags", ReasonInvalid,
			`field "tags": tag key "a` + "\ufffd" + `" must be valid UTF-8`},
		{"tag value too long", obj(`"tags":{"k":"` + strings.Repeat("v", 257) + `"}`), Limits{}, "tags.k", ReasonInvalid,
			`field "tags.k": must be at most 256 bytes, got 257`},
		{"tag value invalid UTF-8", obj("\"tags\":{\"k\":\"\xc3\"}"), Limits{}, "tags.k", ReasonInvalid, `field "tags.k": must be valid UTF-8`},
		{"too many tags", obj(`"tags":{` + strings.Join(tags33, ",") + `}`), Limits{}, "tags", ReasonInvalid, `field "tags": more than 32 tags`},
		{"first bad tag reported", obj(`"tags":{"a":1,"":"x"}`), Limits{}, "tags.a", ReasonType, `field "tags.a": must be a string, got number`},

		// malformed
		{"empty input", ``, Limits{}, "", ReasonMalformed, `malformed JSON at byte 0: unexpected end of JSON input`},
		{"whitespace only", " \n", Limits{}, "", ReasonMalformed, `malformed JSON at byte 2: unexpected end of JSON input`},
		{"trailing comma", `{"device_id":"d",}`, Limits{}, "", ReasonMalformed,
			`malformed JSON at byte 17: invalid character '}' looking for beginning of object key string`},
		{"array", `[{"device_id":"d"}]`, Limits{}, "", ReasonMalformed, `expected a JSON object, got array`},
		{"null", `null`, Limits{}, "", ReasonMalformed, `expected a JSON object, got null`},
		{"bare number", `21.5`, Limits{}, "", ReasonMalformed, `expected a JSON object, got number`},
		{"garbage", `hello`, Limits{}, "", ReasonMalformed, `malformed JSON at byte 0: invalid character 'h' looking for beginning of value`},
		{"trailing garbage", `{"device_id":"d","stream":"s","value":1} x`, Limits{}, "", ReasonMalformed,
			`malformed JSON at byte 41: invalid character 'x' after top-level value`},
		{"two objects", `{"device_id":"d","stream":"s","value":1}{}`, Limits{}, "", ReasonMalformed,
			`malformed JSON at byte 40: invalid character '{' after top-level value`},
		{"truncated", `{"device_id":"d","stream":"s","value":1`, Limits{}, "", ReasonMalformed,
			`malformed JSON at byte 39: unexpected end of JSON input`},
		{"truncated in string", `{"device_id":"d`, Limits{}, "", ReasonMalformed, `malformed JSON at byte 15: unexpected end of JSON input`},
		{"truncated in escape", `{"device_id":"d\`, Limits{}, "", ReasonMalformed, `malformed JSON at byte 16: unexpected end of JSON input`},
		{"missing colon", `{"device_id" "d"}`, Limits{}, "", ReasonMalformed, `malformed JSON at byte 13: invalid character '"' after object key`},
		{"missing comma", `{"device_id":"d" "stream":"s"}`, Limits{}, "", ReasonMalformed,
			`malformed JSON at byte 17: invalid character '"' after object key:value pair`},
		{"single quotes", `{'device_id':"d"}`, Limits{}, "", ReasonMalformed,
			`malformed JSON at byte 1: invalid character '\x27' looking for beginning of object key string`},
		{"leading zero", obj(`"x":01`), Limits{}, "", ReasonMalformed, `~invalid character '1' after object key:value pair`},
		{"bare minus", obj(`"x":-`), Limits{}, "", ReasonMalformed, `~invalid character '}' in numeric literal`},
		{"dot without digits", obj(`"x":1.`), Limits{}, "", ReasonMalformed, `~invalid character '}' after decimal point in numeric literal`},
		{"exponent without digits", obj(`"x":1e+`), Limits{}, "", ReasonMalformed, `~invalid character '}' in exponent of numeric literal`},
		{"plus sign", obj(`"x":+1`), Limits{}, "", ReasonMalformed, `~invalid character '+' looking for beginning of value`},
		{"NaN", obj(`"x":NaN`), Limits{}, "", ReasonMalformed, `~invalid character 'N' looking for beginning of value`},
		{"bad literal", obj(`"x":tru`), Limits{}, "", ReasonMalformed, `~invalid character '}' in literal true`},
		{"control char in string", obj("\"x\":\"a\tb\""), Limits{}, "", ReasonMalformed, `~invalid character '\x09' in string literal`},
		{"bad escape", obj(`"x":"\q"`), Limits{}, "", ReasonMalformed, `~invalid character 'q' in string escape code`},
		{"bad unicode escape", obj(`"x":"\u12G4"`), Limits{}, "", ReasonMalformed, `~invalid character 'G' in \u hexadecimal character escape`},
		{"short unicode escape", obj(`"x":"\u123"`), Limits{}, "", ReasonMalformed, `~invalid character '"' in \u hexadecimal character escape`},
		{"short unicode escape in kept string", `{"device_id":"\u123"}`, Limits{}, "", ReasonMalformed, `~invalid character '"' in \u hexadecimal character escape`},
		{"short unicode escape in key", `{"\u123":1}`, Limits{}, "", ReasonMalformed, `~invalid character '"' in \u hexadecimal character escape`},
		{"bad escape in kept string", `{"device_id":"\x"}`, Limits{}, "", ReasonMalformed, `~invalid character 'x' in string escape code`},
		{"mismatched brackets", obj(`"x":[}`), Limits{}, "", ReasonMalformed, `~invalid character '}' looking for beginning of value`},
		{"unclosed array", obj(`"x":[1 2]`), Limits{}, "", ReasonMalformed, `~invalid character '2' after array element`},
		{"BOM", "\xef\xbb\xbf{}", Limits{}, "", ReasonMalformed, `malformed JSON at byte 0: invalid character '\xef' looking for beginning of value`},
		{"syntax error beats field error", `{"value":"x","device_id":}`, Limits{}, "", ReasonMalformed, `~looking for beginning of value`},
		{"too deep", deep(maxDepth), Limits{}, "", ReasonMalformed, `~exceeded max depth 10000`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := ParseObject([]byte(tt.in), testNow, tt.lim)
			require.Error(t, err)
			require.Equal(t, Event{}, ev)
			var e *Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, tt.reason, e.Reason, "%v", err)
			require.Equal(t, tt.field, e.Field, "%v", err)
			if sub, ok := strings.CutPrefix(tt.msg, "~"); ok {
				require.Contains(t, err.Error(), sub)
			} else {
				require.Equal(t, tt.msg, err.Error())
			}
		})
	}
	_, err := ParseObject([]byte(deep(maxDepth-1)), testNow, Limits{})
	require.NoError(t, err, "nesting at the limit")
}

func TestErrorString(t *testing.T) {
	require.Equal(t, `field "value": required`, (&Error{Field: "value", Reason: ReasonMissing, Msg: "required"}).Error())
	require.Equal(t, `malformed JSON at byte 3: x`, (&Error{Reason: ReasonMalformed, Msg: "malformed JSON at byte 3: x"}).Error())
}

func TestValidName(t *testing.T) {
	for s, want := range map[string]string{
		"dev-1":                  "",
		"温度":                     "",
		"a b.c_d:e@f":            "",
		strings.Repeat("x", 128): "",
		"":                       "must not be empty",
		strings.Repeat("x", 129): "must be at most 128 bytes, got 129",
		"a/b":                    "must not contain '/' (reserved in MQTT topics)",
		"+":                      "must not contain '+' (reserved in MQTT topics)",
		"#":                      "must not contain '#' (reserved in MQTT topics)",
		"a\x00":                  "must not contain control character U+0000",
		"a\u009f":                "must not contain control character U+009F",
		"a\u00a0":                "",
		"a\xff":                  "must be valid UTF-8",
	} {
		require.Equal(t, want, ValidName(s), "%q", s)
	}
}

// reasons returns "index:reason:field" for each rejection.
func reasons(rejs []Rejection) []string {
	var out []string
	for _, r := range rejs {
		e := r.Err.(*Error)
		out = append(out, fmt.Sprintf("%d:%s:%s", r.Index, e.Reason, e.Field))
	}
	return out
}

func TestParseBatch(t *testing.T) {
	ev := func(v float64) string { return fmt.Sprintf(`{"device_id":"d","stream":"s","value":%v}`, v) }
	tests := []struct {
		name   string
		body   string
		ndjson bool
		values []float64 // values of the accepted events, in order
		rejs   []string  // see reasons
		err    string    // whole-body error, "~" prefix: substring
	}{
		{"ndjson", ev(1) + "\n" + ev(2) + "\n", true, []float64{1, 2}, nil, ""},
		{"ndjson blank lines and CRLF", "\n" + ev(1) + "\r\n  \r\n\t\n" + ev(2) + "\r\n", true, []float64{1, 2}, nil, ""},
		{"ndjson bad lines", ev(1) + "\n{\"device_id\":\n\n" + `{"device_id":"d","stream":"s"}` + "\n[1]\n" + ev(2) + " x\n" + ev(3), true,
			[]float64{1, 3}, []string{"1:malformed_json:", "2:missing_field:value", "3:malformed_json:", "4:malformed_json:"}, ""},
		{"ndjson no final newline", ev(1) + "\n" + ev(2), true, []float64{1, 2}, nil, ""},
		{"ndjson empty", "", true, nil, nil, ""},
		{"ndjson blank", " \n\r\n", true, nil, nil, ""},
		{"ndjson garbage", "hello", true, nil, []string{"0:malformed_json:"}, ""},
		{"array", "[" + ev(1) + "," + ev(2) + "]", false, []float64{1, 2}, nil, ""},
		{"array with bad elements", " [ " + ev(1) + ", {\"value\":2}, 3, null, " + ev(4) + ",[] ] \n", false,
			[]float64{1, 4}, []string{"1:missing_field:device_id", "2:malformed_json:", "3:malformed_json:", "5:malformed_json:"}, ""},
		{"empty array", "[]", false, nil, nil, ""},
		{"array syntax error", "[" + ev(1) + ",{\"device_id\":}]", false, nil, nil, "~invalid character '}' looking for beginning of value"},
		{"array trailing comma", "[" + ev(1) + ",]", false, nil, nil, "~invalid character ']' looking for beginning of value"},
		{"array missing comma", "[" + ev(1) + " " + ev(2) + "]", false, nil, nil, "~invalid character '{' after array element"},
		{"array unterminated", "[" + ev(1), false, nil, nil, "~unexpected end of JSON input"},
		{"array trailing garbage", "[" + ev(1) + "]]", false, nil, nil, "~invalid character ']' after top-level value"},
		{"single object", ev(1), false, []float64{1}, nil, ""},
		{"single pretty-printed object", "{\n  \"device_id\": \"d\",\n  \"stream\": \"s\",\n  \"value\": 1\n}\n", false, []float64{1}, nil, ""},
		{"single invalid object", `{"device_id":"d","stream":"s","value":"1"}`, false, nil, []string{"0:wrong_type:value"}, ""},
		{"single malformed object", `{"device_id":"d",`, false, nil, nil, "malformed JSON at byte 17: unexpected end of JSON input"},
		{"single object, trailing garbage", ev(1) + " x", false, nil, nil, "~invalid character 'x' after top-level value"},
		{"objects on lines", ev(1) + "\n\n" + ev(2) + "\n", false, []float64{1, 2}, nil, ""},
		{"objects on lines, first malformed", "{\"device_id\":\n" + ev(2), false, []float64{2}, []string{"0:malformed_json:"}, ""},
		{"two objects on one line", ev(1) + " " + ev(2), false, nil, nil, "~invalid character '{' after top-level value"},
		{"empty", "", false, nil, nil, "malformed JSON at byte 0: unexpected end of JSON input"},
		{"blank", " \r\n", false, nil, nil, "malformed JSON at byte 3: unexpected end of JSON input"},
		{"string", `"x"`, false, nil, nil, "expected a JSON array or object, got string"},
		{"garbage", `x`, false, nil, nil, "malformed JSON at byte 0: invalid character 'x' looking for beginning of value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, rejs, err := ParseBatch([]byte(tt.body), tt.ndjson, testNow, Limits{})
			if tt.err != "" {
				require.Error(t, err)
				require.Nil(t, evs)
				require.Nil(t, rejs)
				require.Equal(t, ReasonMalformed, err.(*Error).Reason)
				if sub, ok := strings.CutPrefix(tt.err, "~"); ok {
					require.Contains(t, err.Error(), sub)
				} else {
					require.Equal(t, tt.err, err.Error())
				}
				return
			}
			require.NoError(t, err)
			var values []float64
			for _, e := range evs {
				require.Equal(t, "d", e.DeviceID)
				values = append(values, e.Value)
			}
			require.Equal(t, tt.values, values)
			require.Equal(t, tt.rejs, reasons(rejs))
		})
	}
}

func TestParseBatchLineErrorsAreLocal(t *testing.T) {
	evs, rejs, err := ParseBatch([]byte("{\"device_id\":\"d\",\"stream\":\"s\",\"value\":1,\"x\":\"unterminated\n"+
		`{"device_id":"d","stream":"s","value":2}`), true, testNow, Limits{})
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, 2.0, evs[0].Value)
	require.Equal(t, []string{"0:malformed_json:"}, reasons(rejs))
	require.Equal(t, "malformed JSON at byte 57: unexpected end of JSON input", rejs[0].Err.Error(), "offsets are within the line")
}

func TestParseMQTT(t *testing.T) {
	tests := []struct {
		name    string
		device  string
		stream  string
		payload string
		want    Event
		field   string
		reason  Reason
		msg     string
	}{
		{name: "bare number", device: "dev-1", stream: "temperature", payload: `21.5`,
			want: Event{DeviceID: "dev-1", Stream: "temperature", TS: testNowMS, Value: 21.5}},
		{name: "bare number, whitespace", device: "dev-1", stream: "t", payload: " -1e3\r\n",
			want: Event{DeviceID: "dev-1", Stream: "t", TS: testNowMS, Value: -1000}},
		{name: "object without names", device: "dev-1", stream: "t", payload: `{"value":2,"ts":1764190000000,"id":"m","tags":{"a":"b"}}`,
			want: Event{DeviceID: "dev-1", Stream: "t", TS: 1764190000000, Value: 2, ID: "m", Tags: map[string]string{"a": "b"}}},
		{name: "object with matching names", device: "dev-1", stream: "t", payload: `{"device_id":"dev-1","stream":"t","value":2}`,
			want: Event{DeviceID: "dev-1", Stream: "t", TS: testNowMS, Value: 2}},
		{name: "null names", device: "dev-1", stream: "t", payload: `{"device_id":null,"stream":null,"value":2}`,
			want: Event{DeviceID: "dev-1", Stream: "t", TS: testNowMS, Value: 2}},
		{name: "device mismatch", device: "y", stream: "t", payload: `{"device_id":"x","value":2}`,
			field: "device_id", reason: ReasonInvalid, msg: `field "device_id": device_id "x" does not match topic device "y"`},
		{name: "stream mismatch", device: "y", stream: "t", payload: `{"stream":"u","value":2}`,
			field: "stream", reason: ReasonInvalid, msg: `field "stream": stream "u" does not match topic stream "t"`},
		{name: "device wrong type", device: "y", stream: "t", payload: `{"device_id":1,"value":2}`,
			field: "device_id", reason: ReasonType, msg: `field "device_id": must be a string, got number`},
		{name: "value missing", device: "y", stream: "t", payload: `{"ts":1764190000000}`,
			field: "value", reason: ReasonMissing, msg: `field "value": required`},
		{name: "future", device: "y", stream: "t", payload: `{"value":1,"ts":"2031-01-01T00:00:00Z"}`,
			field: "ts", reason: ReasonFuture, msg: `field "ts": 2031-01-01T00:00:00.000Z is 4y in the future (limit 5m0s)`},
		{name: "bare overflow", device: "y", stream: "t", payload: `1e400`,
			field: "value", reason: ReasonInvalid, msg: `field "value": 1e400 is out of range for a float64`},
		{name: "string payload", device: "y", stream: "t", payload: `"21.5"`,
			reason: ReasonMalformed, msg: `expected a JSON object or number, got string`},
		{name: "text payload", device: "y", stream: "t", payload: `21.5 C`,
			reason: ReasonMalformed, msg: `malformed JSON at byte 5: invalid character 'C' after top-level value`},
		{name: "bad number", device: "y", stream: "t", payload: `21.`,
			reason: ReasonMalformed, msg: `malformed JSON at byte 3: unexpected end of JSON input`},
		{name: "empty payload", device: "y", stream: "t", payload: ``,
			reason: ReasonMalformed, msg: `malformed JSON at byte 0: unexpected end of JSON input`},
		{name: "bad topic device", device: "a+b", stream: "t", payload: `1`,
			field: "device_id", reason: ReasonInvalid, msg: `field "device_id": topic segment must not contain '+' (reserved in MQTT topics)`},
		{name: "empty topic stream", device: "a", stream: "", payload: `1`,
			field: "stream", reason: ReasonInvalid, msg: `field "stream": topic segment must not be empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := ParseMQTT(tt.device, tt.stream, []byte(tt.payload), testNow, Limits{})
			if tt.msg == "" {
				require.NoError(t, err)
				requireSameEvent(t, tt.want, ev)
				return
			}
			require.Error(t, err)
			e := err.(*Error)
			require.Equal(t, tt.reason, e.Reason)
			require.Equal(t, tt.field, e.Field)
			require.Equal(t, tt.msg, err.Error())
		})
	}
}

func TestAppendJSON(t *testing.T) {
	ev := Event{DeviceID: "dev-1", Stream: "temperature", TS: 1795726095123, Value: 21.5, ID: "m-1",
		Tags: map[string]string{"site": "north", "b": "q\"\\\n\x01\u2028é"}, Received: 1795726095200}
	require.Equal(t, `{"device_id":"dev-1","stream":"temperature","ts":"2026-11-26T20:48:15.123Z","value":21.5,"id":"m-1",`+
		`"tags":{"b":"q\"\\\n\u0001\u2028é","site":"north"},"received_at":"2026-11-26T20:48:15.200Z"}`,
		string(ev.AppendJSON([]byte(nil))))
	ev = Event{DeviceID: "d", Stream: "s", TS: 1795726095000, Value: math.Copysign(0, -1)}
	require.Equal(t, `prefix{"device_id":"d","stream":"s","ts":"2026-11-26T20:48:15.000Z","value":-0,"received_at":"1970-01-01T00:00:00.000Z"}`,
		string(ev.AppendJSON([]byte("prefix"))))

	for v, want := range map[float64]string{
		1e21: "1e+21", 1e20: "100000000000000000000", 1e-7: "1e-7", 0.000001: "0.000001",
		-1.5e-300: "-1.5e-300", 0.1: "0.1", math.NaN(): "null", math.Inf(1): "null",
	} {
		require.Equal(t, want, string(appendJSONFloat(nil, v)))
	}
	require.Equal(t, `"a\ufffdb"`, string(appendJSONString(nil, "a\xffb")))
}

func TestAppendJSONRoundTrip(t *testing.T) {
	for _, ev := range []Event{
		{DeviceID: "dev-000123", Stream: "temperature", TS: 1764190000000, Value: 21.53, Received: 1764190000001},
		{DeviceID: "é😀 x", Stream: "s\"\\", TS: 946684800000, Value: math.Copysign(0, -1), ID: "id-\u2029",
			Tags: map[string]string{"k": "v\x00\n\t", "ключ": "", "z": strings.Repeat("v", 256)}},
		{DeviceID: "d", Stream: "s", TS: testNowMS + 5*60*1000, Value: math.MaxFloat64},
		{DeviceID: "d", Stream: "s", TS: testNowMS, Value: -math.SmallestNonzeroFloat64},
		{DeviceID: "d", Stream: "s", TS: testNowMS, Value: 123456789.123456789},
	} {
		got, err := ParseObject(ev.AppendJSON(nil), testNow, Limits{})
		require.NoError(t, err)
		ev.Received = 0
		requireSameEvent(t, ev, got)
	}
}

func TestAppendMillis(t *testing.T) {
	for _, ms := range []int64{0, -1, 1, 946684800000, testNowMS, 951782400000 - 1, 951782400000, // 2000-02-29/03-01
		-62167219200000, -62167219200000 - 1, 253402300800000 - 1, 253402300800000, math.MinInt64, math.MaxInt64} {
		want := time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
		require.Equal(t, want, string(appendMillis(nil, ms)), "%d", ms)
	}
}

func FuzzAppendMillis(f *testing.F) {
	f.Add(int64(testNowMS))
	f.Add(int64(-62167219200000))
	f.Fuzz(func(t *testing.T, ms int64) {
		want := time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
		require.Equal(t, want, string(appendMillis(nil, ms)))
		if y := time.UnixMilli(ms).UTC().Year(); y >= 0 && y <= 9999 {
			back, ok := parseRFC3339(appendMillis(nil, ms))
			require.True(t, ok)
			require.Equal(t, ms, back)
		}
	})
}

func TestParseBatchRejectionLimit(t *testing.T) {
	good := `{"device_id":"d","stream":"s","value":1}`
	bad := `{"device_id":"d","stream":"s"}`
	lines := func(n int, line string) string { return strings.Repeat(line+"\n", n) }
	array := func(n int, elem string) string { return strings.TrimSuffix(strings.Repeat(elem+",", n), ",") }

	// Exactly MaxRejections bad events beside good ones: the good are kept.
	evs, rejs, err := ParseBatch([]byte(lines(MaxRejections, bad)+lines(2000, good)), true, testNow, Limits{})
	require.NoError(t, err)
	require.Len(t, evs, 2000)
	require.Len(t, rejs, MaxRejections)
	evs, rejs, err = ParseBatch([]byte("["+array(MaxRejections, bad)+","+array(2000, good)+"]"), false, testNow, Limits{})
	require.NoError(t, err)
	require.Len(t, evs, 2000)
	require.Len(t, rejs, MaxRejections)

	// One more and the body is refused, naming the first problem.
	for name, body := range map[string]string{
		"ndjson": lines(2000, good) + lines(MaxRejections+1, "x"),
		"array":  "[" + array(MaxRejections+1, "3") + "]",
	} {
		evs, rejs, err := ParseBatch([]byte(body), name == "ndjson", testNow, Limits{})
		require.Nil(t, evs, name)
		require.Nil(t, rejs, name)
		require.ErrorContains(t, err, "more than 1000 invalid events, body refused; the first, at index", name)
		require.Equal(t, ReasonMalformed, err.(*Error).Reason)
	}
}

func TestNotJSONIsASyntaxError(t *testing.T) {
	_, rejs, err := ParseBatch([]byte("not json at all\n"), true, testNow, Limits{})
	require.NoError(t, err)
	require.Len(t, rejs, 1)
	require.Contains(t, rejs[0].Err.Error(), "malformed JSON at byte 1: invalid character 'o'")
	_, err = ParseMQTT("d", "s", []byte("nope"), testNow, Limits{})
	require.ErrorContains(t, err, "malformed JSON at byte 1")
	_, err = ParseMQTT("d", "s", []byte("null"), testNow, Limits{})
	require.ErrorContains(t, err, "expected a JSON object or number, got null")
}

func TestStarIsNotAName(t *testing.T) {
	_, err := ParseObject([]byte(`{"device_id":"*","stream":"s","value":1}`), testNow, Limits{})
	require.ErrorContains(t, err, `field "device_id": must not be "*"`)
	require.NotEmpty(t, ValidName("*"))
	require.Empty(t, ValidName("**"))
}

// TestTSAssigned: an event is marked TSAssigned exactly when the device sent
// no ts (or a null one) and the node set it.
func TestTSAssigned(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{`{"device_id":"d","stream":"s","value":1}`, true},
		{`{"device_id":"d","stream":"s","value":1,"ts":null}`, true},
		{`{"device_id":"d","stream":"s","value":1,"ts":1795726095123}`, false},
		{`{"device_id":"d","stream":"s","value":1,"ts":"2026-11-26T17:28:15.123Z"}`, false},
	} {
		ev, err := ParseObject([]byte(tt.in), testNow, Limits{})
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, ev.TSAssigned, tt.in)

		evs, _, err := ParseBatch([]byte("["+tt.in+"]"), false, testNow, Limits{})
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, tt.want, evs[0].TSAssigned, tt.in)

		ev, err = ParseMQTT("d", "s", []byte(tt.in), testNow, Limits{})
		require.NoError(t, err)
		require.Equal(t, tt.want, ev.TSAssigned, tt.in)
	}
	ev, err := ParseMQTT("d", "s", []byte(`21.5`), testNow, Limits{})
	require.NoError(t, err)
	require.True(t, ev.TSAssigned, "a bare number carries no ts")
}
