package event

import (
	"fmt"
	"testing"
)

const benchLine = `{"device_id":"dev-000123","stream":"temperature","ts":1764190000000,"value":21.53}`

// benchBody is NDJSON of n typical lines from 1000 devices.
func benchBody(n int) []byte {
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, `{"device_id":"dev-%06d","stream":"temperature","ts":%d,"value":%d.%02d}`+"\n",
			i%1000, 1764190000000+int64(i), 20+i%10, i%100)
	}
	return b
}

func BenchmarkParseBatchNDJSON(b *testing.B) {
	const n = 1000
	body := benchBody(n)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		evs, rejs, err := ParseBatch(body, true, testNow, Limits{})
		if err != nil || len(rejs) != 0 || len(evs) != n {
			b.Fatal(err, rejs)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkParseObject(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"typical", benchLine},
		{"rfc3339", `{"device_id":"dev-000123","stream":"temperature","ts":"2026-11-26T20:48:15.123Z","value":21.53}`},
		{"id+tags", `{"device_id":"dev-000123","stream":"temperature","ts":1764190000000,"value":21.53,"id":"m-000042",` +
			`"tags":{"site":"north","unit":"C"}}`},
		{"escapes+unknown", `{"device_id":"dev-\u00e9","stream":"temp\"","value":21.53,"meta":{"fw":"1.2.3","x":[1,2,3]}}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			in := []byte(bc.in)
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseObject(in, testNow, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var benchEvent = Event{DeviceID: "dev-000123", Stream: "temperature", TS: 1764190000000, Value: 21.53, Received: 1764190000123}

func BenchmarkAppendBinary(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = benchEvent.AppendBinary(buf[:0])
	}
}

func BenchmarkDecodeBinary(b *testing.B) {
	rec := benchEvent.AppendBinary(nil)
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeBinary(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = benchEvent.AppendJSON(buf[:0])
	}
}
