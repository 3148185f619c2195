package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// BenchmarkAppendIDLessWithTS measures what de-duplicating id-less events by
// content costs: two stores, one with ingest.dedup_without_id: content (the
// default) and one with off, take the same batches of id-less events with the
// device's ts, one batch after the other, so that both see the same machine.
// It reports each store's time per event and their ratio (content / off).
// A third store takes the same events each with an id (ids repeat across
// devices, never within one), for the cost of the id de-duplication every
// event with an id already pays (content / id).
//
// "mem" logs live in memory, so the figure is the CPU cost of Append
// (encode, de-duplicate, index, frame); "disk" logs are files in the test's
// temporary directory, fsync'd on every Append as in production.
//
// The dedup set fills to its default bound (1 000 000 keys) and then
// forgets the oldest, as at a sustained rate above ~1 700 events/s.
func BenchmarkAppendIDLessWithTS(b *testing.B) {
	for _, c := range []struct {
		fs    string
		batch int
	}{{"mem", 1}, {"mem", 100}, {"disk", 100}} {
		b.Run(fmt.Sprintf("%s/batch=%d", c.fs, c.batch), func(b *testing.B) {
			open := func(noContent bool) *Store {
				opts := buffer.Options{Dir: b.TempDir(), SegmentBytes: 16 << 20, MaxBytes: 256 << 20}
				if c.fs == "mem" {
					opts.FS, opts.Dir = vfs.NewMem(), "/log"
				}
				l, err := buffer.Open(opts)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { l.Close() })
				s, err := Open(l, Options{NoContentDedup: noContent})
				if err != nil {
					b.Fatal(err)
				}
				return s
			}
			content, off, ids := open(false), open(true), open(false)
			ctx := context.Background()
			evs := make([]event.Event, c.batch)
			withID := make([]event.Event, c.batch)
			tags := map[string]string{"site": "plant-1", "line": "3"}
			ts := time.Now().Add(-time.Hour).UnixMilli()
			var tContent, tOff, tID time.Duration
			appendTimed := func(s *Store, evs []event.Event, d *time.Duration) {
				for i := range evs {
					evs[i].Received = 0 // stamped by each store
				}
				t0 := time.Now()
				res, err := s.Append(ctx, evs)
				*d += time.Since(t0)
				if err != nil || res.Stored != len(evs) {
					b.Fatalf("stored %d of %d: %v", res.Stored, len(evs), err)
				}
			}
			b.ResetTimer()
			for n := range b.N {
				for i := range evs {
					k := n*c.batch + i
					evs[i] = event.Event{DeviceID: fmt.Sprintf("sensor-%04d", k%1000), Stream: "temperature",
						TS: ts + int64(k/1000), Value: float64(k % 977), Tags: tags}
					withID[i] = evs[i]
					withID[i].ID = fmt.Sprintf("m-%d", k/1000)
				}
				switch n % 3 { // rotate which store goes first
				case 0:
					appendTimed(content, evs, &tContent)
					appendTimed(off, evs, &tOff)
					appendTimed(ids, withID, &tID)
				case 1:
					appendTimed(off, evs, &tOff)
					appendTimed(ids, withID, &tID)
					appendTimed(content, evs, &tContent)
				default:
					appendTimed(ids, withID, &tID)
					appendTimed(content, evs, &tContent)
					appendTimed(off, evs, &tOff)
				}
			}
			b.StopTimer()
			events := float64(b.N * c.batch)
			b.ReportMetric(float64(tContent.Nanoseconds())/events, "content-ns/event")
			b.ReportMetric(float64(tOff.Nanoseconds())/events, "off-ns/event")
			b.ReportMetric(float64(tID.Nanoseconds())/events, "id-ns/event")
			b.ReportMetric(float64(tContent)/float64(tOff), "content/off")
			b.ReportMetric(float64(tContent)/float64(tID), "content/id")
			b.ReportMetric(float64(content.dedup.len()), "content-keys")
		})
	}
}
