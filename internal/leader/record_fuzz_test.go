package leader

import (
	"reflect"
	"testing"
)

// FuzzDecode: any bytes decode to a record or ErrBadRecord, and a record that
// decodes survives a round trip.
func FuzzDecode(f *testing.F) {
	f.Add(first(Info{Member: "a", NodeID: "n", HTTP: "http://h:1", MQTT: "h:2"}, 5, 1).encode())
	f.Add([]byte(`{"term":2,"member":"b","released":true,"history":[{"term":1,"member":"a","start":0}],"later":1}`))
	f.Add([]byte(`{"term":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decode(b)
		if err != nil {
			return
		}
		again, err := decode(r.encode())
		if err != nil || !reflect.DeepEqual(normal(again), normal(r)) {
			t.Fatalf("round trip: %+v -> %+v, %v", r, again, err)
		}
	})
}

// normal treats an empty history like none.
func normal(r Record) Record {
	if len(r.History) == 0 {
		r.History = nil
	}
	return r
}
