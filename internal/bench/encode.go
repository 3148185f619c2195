package bench

import (
	"fmt"
	"strconv"
)

// benchStream is the stream every simulated device reports on.
const benchStream = "temperature"

// device is one simulated device. Its events are a deterministic sequence of
// readings; it is used by one goroutine at a time.
type device struct {
	id     string
	index  int    // 0-based; the id is 1-based
	topic  string // devices/{id}/{stream}
	prefix []byte // `{"device_id":"…","stream":"…","ts":`
	seq    uint64 // events generated so far
}

func newDevices(n int) []*device {
	ds := make([]*device, n)
	for i := range ds {
		id := fmt.Sprintf("dev-%06d", i+1)
		ds[i] = &device{
			id:     id,
			index:  i,
			topic:  "devices/" + id + "/" + benchStream,
			prefix: []byte(`{"device_id":"` + id + `","stream":"` + benchStream + `","ts":`),
		}
	}
	return ds
}

// reading is the value device index sends as its seq-th event: a temperature
// from 15.00 to 29.99 with two decimals, as a real sensor would send it.
func reading(index int, seq uint64) float64 {
	return float64(1500+(seq*37+uint64(index)*11)%1500) / 100
}

// appendNDJSON appends the device's next event as one NDJSON line and returns
// the value it carries.
func (d *device) appendNDJSON(dst []byte, ts int64) ([]byte, float64) {
	v := reading(d.index, d.seq)
	d.seq++
	dst = append(dst, d.prefix...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"value":`...)
	dst = strconv.AppendFloat(dst, v, 'f', -1, 64)
	return append(dst, "}\n"...), v
}

// appendPayload appends the device's next event as an MQTT payload; device_id
// and stream come from the topic. It returns the value the event carries.
func (d *device) appendPayload(dst []byte, ts int64) ([]byte, float64) {
	v := reading(d.index, d.seq)
	d.seq++
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"value":`...)
	dst = strconv.AppendFloat(dst, v, 'f', -1, 64)
	return append(dst, '}'), v
}
