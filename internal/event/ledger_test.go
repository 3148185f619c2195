package event

import (
	"reflect"
	"testing"
)

func TestLedgerRoundTrip(t *testing.T) {
	for _, l := range []LedgerRecord{
		{Reason: LossRefused, Stream: "hvac", From: 1, To: 5, Count: 40},
		{Reason: LossDropped, Stream: "temp", From: 7, To: 7, Count: 6, Ranges: []OffsetRange{{0, 2}, {10, 3}, {20, 1}}},
	} {
		got, err := DecodeLedger(l.AppendBinary(nil))
		if err != nil || !reflect.DeepEqual(got, l) {
			t.Fatalf("round trip of %+v: %+v, %v", l, got, err)
		}
	}
	for name, l := range map[string]LedgerRecord{
		"reason":  {Reason: 9, Stream: "s", Count: 1},
		"count":   {Reason: LossRefused, Stream: "s"},
		"times":   {Reason: LossRefused, Stream: "s", From: 5, To: 1, Count: 1},
		"sum":     {Reason: LossDropped, Stream: "s", Count: 5, Ranges: []OffsetRange{{0, 2}}},
		"overlap": {Reason: LossDropped, Stream: "s", Count: 4, Ranges: []OffsetRange{{5, 2}, {5, 2}}},
	} {
		if _, err := DecodeLedger(l.AppendBinary(nil)); err == nil {
			t.Errorf("%s: %+v accepted", name, l)
		}
	}
}

// FuzzDecodeLedger: no panic, and whatever decodes encodes back to itself.
func FuzzDecodeLedger(f *testing.F) {
	f.Add((&LedgerRecord{Reason: LossDropped, Stream: "t", From: 1, To: 2, Count: 3, Ranges: []OffsetRange{{4, 1}, {9, 2}}}).AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeLedger(b)
		if err != nil {
			return
		}
		again, err := DecodeLedger(l.AppendBinary(nil))
		if err != nil || !reflect.DeepEqual(again, l) {
			t.Fatalf("%+v re-encoded to %+v, %v", l, again, err)
		}
	})
}
