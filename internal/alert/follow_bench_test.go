package alert

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// BenchmarkFollowEvents measures what a notifier's reader costs per record of
// a log of events (the common case at high ingest): a new notifier reads
// 200 000 events from offset 0, passing each by its type byte, to the one
// alert at the end. ns/record is the figure; the reader, not decoding, is
// the cost (reading the segment and checking each frame's CRC).
func BenchmarkFollowEvents(b *testing.B) {
	l, err := buffer.Open(buffer.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const n = 200_000
	batch := make([][]byte, 0, 1000)
	for i := range n {
		e := event.Event{DeviceID: "dev-0042", Stream: "temperature", TS: int64(i), Value: 21.5, Received: int64(i)}
		batch = append(batch, e.AppendBinary(nil))
		if len(batch) == cap(batch) {
			if _, err := l.Append(batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	a := alerts("hot", Warning, 1)[0]
	rec := event.AlertRecord{Rule: a.Rule, Severity: string(a.Severity), Firing: true, Stream: a.Stream,
		DeviceID: a.DeviceID, Value: a.Value, Threshold: a.Threshold, FiredAt: a.FiredAt}
	if _, err := l.Append(rec.AppendBinary(nil)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		r := &recorder{name: "r" + strconv.Itoa(i)}
		d := NewDispatcher(DispatcherOptions{Log: l, Primary: []Notifier{r}, Logger: quietLogger()})
		d.Start()
		for len(r.Got()) == 0 {
			time.Sleep(100 * time.Microsecond)
		}
		b.StopTimer()
		d.Close(context.Background())
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/record")
}
