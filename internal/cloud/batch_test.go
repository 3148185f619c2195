package cloud

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/holdfast-edge/holdfast/internal/event"
)

func TestBatchRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, compress := range []bool{false, true} {
		for n := 1; n < 300; n += 37 {
			var b Batch
			var want []BatchRecord
			off := rng.Uint64N(1 << 40)
			for range n {
				p := bytes.Repeat([]byte{byte(rng.IntN(256))}, 1+rng.IntN(200))
				p[0] = 0x01
				b.Append(off, p)
				want = append(want, BatchRecord{off, p})
				off += 1 + rng.Uint64N(5)
			}
			m := BatchMsg("n1", KindEvents, "temp", "normal", &b, compress)
			got, err := DecodeBatch(m.Header, m.Data)
			if err != nil {
				t.Fatalf("n=%d compress=%v: %v", n, compress, err)
			}
			if len(got) != len(want) {
				t.Fatalf("n=%d: %d records back", n, len(got))
			}
			for i := range want {
				if got[i].Offset != want[i].Offset || !bytes.Equal(got[i].Payload, want[i].Payload) {
					t.Fatalf("n=%d record %d: got %d, want %d", n, i, got[i].Offset, want[i].Offset)
				}
			}
			if compress && len(m.Data) >= len(b.Body) {
				t.Errorf("n=%d: zstd body %d bytes, raw %d", n, len(m.Data), len(b.Body))
			}
		}
	}
}

func TestDecodeBatchRejects(t *testing.T) {
	var b Batch
	b.Append(10, []byte{1, 2})
	b.Append(12, []byte{1, 3})
	good := BatchMsg("n1", KindEvents, "temp", "normal", &b, false)
	with := func(k, v string) nats.Header {
		h := nats.Header{}
		for hk, hv := range good.Header {
			h[hk] = hv
		}
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
		return h
	}
	for _, tc := range []struct {
		name string
		h    nats.Header
		data []byte
		want string
	}{
		{"no first", with(HeaderFirst, ""), good.Data, "Holdfast-First: missing"},
		{"bad last", with(HeaderLast, "x"), good.Data, "Holdfast-Last \"x\""},
		{"count too high", with(HeaderCount, "3"), good.Data, "holds 2 records"},
		{"count impossible", with(HeaderCount, "4"), good.Data, "inconsistent"},
		{"last too low", with(HeaderLast, "11"), good.Data, "out of order or range"},
		{"last too high", with(HeaderLast, "13"), good.Data, "ending at 12"},
		{"encoding", with(HeaderEncoding, "gzip"), good.Data, "unknown Holdfast-Encoding"},
		{"not zstd", with(HeaderEncoding, "zstd"), good.Data, "zstd"},
		{"truncated", good.Header, good.Data[:len(good.Data)-1], "bad length"},
		{"trailing", good.Header, append(append([]byte{}, good.Data...), 1, 1, 9), "out of order or range"},
		{"zero length", good.Header, []byte{0, 0, 2, 1, 0}, "bad length"},
		{"repeated offset", good.Header, []byte{0, 1, 1, 0, 1, 1}, "out of order or range"},
	} {
		_, err := DecodeBatch(tc.h, tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// FuzzDecodeBatch: arbitrary bodies and headers never panic, and whatever
// decodes re-encodes to the same body.
func FuzzDecodeBatch(f *testing.F) {
	var b Batch
	b.Append(7, []byte{1, 2, 3})
	b.Append(9, []byte{2})
	f.Add(uint64(7), uint64(9), uint64(2), false, b.Body)
	f.Add(uint64(7), uint64(9), uint64(2), true, BatchMsg("n", "events", "s", "low", &b, true).Data)
	f.Fuzz(func(t *testing.T, first, last, count uint64, zstd bool, data []byte) {
		h := nats.Header{}
		h.Set(HeaderFirst, strconv.FormatUint(first, 10))
		h.Set(HeaderLast, strconv.FormatUint(last, 10))
		h.Set(HeaderCount, strconv.FormatUint(count, 10))
		if zstd {
			h.Set(HeaderEncoding, "zstd")
		}
		recs, err := DecodeBatch(h, data)
		if err != nil {
			return
		}
		var again Batch
		for _, r := range recs {
			again.Append(r.Offset, r.Payload)
		}
		if again.First != first || again.Last != last || uint64(again.Count) != count {
			t.Fatalf("decoded %d-%d ×%d from headers %d-%d ×%d", again.First, again.Last, again.Count, first, last, count)
		}
		if !zstd && !bytes.Equal(again.Body, data) {
			t.Fatalf("re-encoded body differs")
		}
	})
}

// BenchmarkBatchCompression compresses a 2000-event batch (97 devices, one
// stream, event ids) at each level holdfast uses; bytes/event is on the wire.
//
//	go test ./internal/cloud -run '^$' -bench BatchCompression
func BenchmarkBatchCompression(b *testing.B) {
	var batch Batch
	for i := range 2000 {
		e := event.Event{DeviceID: fmt.Sprintf("dev-%d", i%97), Stream: "temp", TS: int64(1_700_000_000_000 + i*1000),
			Value: float64(i%50) + 0.25, ID: fmt.Sprintf("id-%d", i)}
		batch.Append(uint64(i), e.AppendBinary(nil))
	}
	for _, c := range []struct {
		name string
		c    Compression
	}{{"none", NoCompression}, {"fast", FastCompression}, {"hard", HardCompression}} {
		b.Run(c.name, func(b *testing.B) {
			var n int
			for b.Loop() {
				n = len(BatchMsgCompressed("n1", KindEvents, "temp", "normal", &batch, c.c).Data)
			}
			b.ReportMetric(float64(n)/2000, "bytes/event")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/2000, "ns/event")
		})
	}
}
