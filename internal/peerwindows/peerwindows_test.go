package peerwindows

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/window"
)

var t0 = time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC).UnixMilli()

// partialAt is a window of "temp" ending i seconds before t0 + 100 s: a
// larger i comes later in page order.
func partialAt(i int, v float64, final bool) window.Partial {
	k := window.Key{Stream: "temp", Size: time.Second, Start: t0 + int64(99-i)*1000}
	p := window.NewPartial(k, window.DefaultAccuracy)
	p.Add(k.Start+int64(v), v)
	p.Final = final
	return *p
}

func page(more bool, ps ...window.Partial) Page { return Page{Partials: ps, More: more} }

func starts(pg Page) []int64 {
	var out []int64
	for _, p := range pg.Partials {
		out = append(out, (p.Start-t0)/1000)
	}
	return out
}

func TestMerge(t *testing.T) {
	a := page(true, partialAt(1, 1, true), partialAt(3, 3, true), partialAt(5, 5, true))
	b := page(false, partialAt(2, 2, true), partialAt(3, 7, false), partialAt(4, 4, true), partialAt(6, 6, true))

	m, err := Merge(10, a, b)
	require.NoError(t, err)
	require.Equal(t, []int64{98, 97, 96, 95, 94}, starts(m), "up to a's last window: past it a's are unknown")
	require.True(t, m.More)
	w3 := m.Partials[2]
	require.Equal(t, uint64(2), w3.Count)
	require.Equal(t, 10.0, w3.Sum)
	require.Equal(t, 7.0, w3.Last, "the later event")
	require.False(t, w3.Final, "open on b")
	require.Equal(t, uint64(1), a.Partials[1].Count, "pages are not changed")
	require.Equal(t, uint64(1), a.Partials[1].Sketch.Count())

	m, err = Merge(2, a, b)
	require.NoError(t, err)
	require.Equal(t, []int64{98, 97}, starts(m))
	require.True(t, m.More)

	a.More = false
	m, err = Merge(10, a, b)
	require.NoError(t, err)
	require.Equal(t, []int64{98, 97, 96, 95, 94, 93}, starts(m))
	require.False(t, m.More)

	m, err = Merge(10, a)
	require.NoError(t, err)
	require.Equal(t, []int64{98, 96, 94}, starts(m), "one node alone")

	other := partialAt(3, 1, true)
	other.Sketch = window.NewSketch(0.02)
	other.Sketch.Add(1)
	_, err = Merge(10, a, page(false, other))
	require.ErrorIs(t, err, window.ErrAccuracyMismatch)
}

func TestFromRecord(t *testing.T) {
	sk := window.NewSketch(window.DefaultAccuracy)
	sk.Add(1.7e308)
	sk.Add(1.7e308)
	skb, _ := sk.MarshalBinary()
	rec := &event.WindowRecord{Stream: "huge", SizeMS: 60_000, Start: t0, Count: 2, Sum: math.MaxFloat64, Overflow: true, OverflowMean: 1.7e308,
		Min: 1.7e308, Max: 1.7e308, Last: 1.7e308, LastTS: t0 + 5, P50: 1.7e308, P95: 1.7e308, P99: 1.7e308, Sketch: skb}
	p, err := FromRecord(rec)
	require.NoError(t, err)
	require.True(t, p.Final)
	r := p.Result()
	require.True(t, r.Overflow)
	require.Equal(t, math.MaxFloat64, r.Sum)
	require.InEpsilon(t, 1.7e308, r.Mean, 1e-15)
	require.Equal(t, 1.7e308, r.P50)

	// Merged with a window of small values the sum is back in range.
	q := window.NewPartial(p.Key, window.DefaultAccuracy)
	q.Add(t0, -1.7e308)
	q.Add(t0+1, -1.7e308)
	require.NoError(t, q.Merge(&p))
	r = q.Result()
	require.False(t, r.Overflow)
	require.InDelta(t, 0, r.Sum, 1e293)

	rec.Sketch = nil
	_, err = FromRecord(rec)
	require.Error(t, err)
	rec.Sketch, rec.Count = skb, 3
	_, err = FromRecord(rec)
	require.Error(t, err)
}

func TestReply(t *testing.T) {
	q := Query{Stream: "temp", From: math.MinInt64, To: math.MaxInt64, Limit: 10}
	pg := page(false, partialAt(1, 1, true), partialAt(2, 2, false), partialAt(3, 3, true))
	b, err := encodeReply(pg, replyBudget)
	require.NoError(t, err)
	got, err := decodeReply(b, q)
	require.NoError(t, err)
	require.Equal(t, starts(pg), starts(got))
	require.False(t, got.More)

	one := len(pg.Partials[0].AppendBinary(nil)) + 3 + 2*10
	b, err = encodeReply(pg, one)
	require.NoError(t, err)
	got, err = decodeReply(b, q)
	require.NoError(t, err)
	require.Equal(t, []int64{98}, starts(got), "cut at the budget")
	require.True(t, got.More)
	_, err = encodeReply(pg, 10)
	require.Error(t, err, "a window that alone passes the budget")

	for name, bad := range map[string]struct {
		pg Page
		q  Query
	}{
		"out of order":    {page(false, partialAt(2, 2, true), partialAt(1, 1, true)), q},
		"repeated":        {page(false, partialAt(2, 2, true), partialAt(2, 2, true)), q},
		"not asked for":   {pg, Query{Stream: "hum", From: math.MinInt64, To: math.MaxInt64, Limit: 10}},
		"before cursor":   {pg, Query{Stream: "temp", From: math.MinInt64, To: math.MaxInt64, Limit: 10, After: &pg.Partials[1].Key}},
		"past the limit":  {pg, Query{Stream: "temp", From: math.MinInt64, To: math.MaxInt64, Limit: 2}},
		"more, but empty": {page(true), q},
	} {
		b, err := encodeReply(bad.pg, replyBudget)
		require.NoError(t, err)
		_, err = decodeReply(b, bad.q)
		require.ErrorIs(t, err, ErrPeer, name)
	}
	_, err = decodeReply(encodeError(errors.New("disk on fire")), q)
	require.ErrorIs(t, err, ErrPeer)
	require.ErrorContains(t, err, "disk on fire")
}

func TestRequest(t *testing.T) {
	after := window.Key{Stream: "temp", DeviceID: "d1", Size: time.Minute, Start: t0}
	for _, q := range []Query{
		{Stream: "temp", DeviceID: "*", Size: time.Minute, From: t0, To: t0 + 3_600_000, After: &after, Limit: 100},
		{From: math.MinInt64, To: math.MaxInt64, Limit: 1},
		{From: 0, To: 0, Limit: MaxLimit},
	} {
		b, err := encodeRequest(q)
		require.NoError(t, err)
		got, err := decodeRequest(b)
		require.NoError(t, err)
		require.Equal(t, q, got)
	}
	for _, b := range []string{`{"limit":0}`, `{"limit":10001}`, `{"limit":1,"size_ms":-1}`, `{"limit":1,"after":{"size_ms":0}}`, `[`} {
		_, err := decodeRequest([]byte(b))
		require.ErrorIs(t, err, ErrQuery, b)
	}
}

func FuzzDecodeReply(f *testing.F) {
	q := Query{From: math.MinInt64, To: math.MaxInt64, Limit: 10, DeviceID: "*"}
	b, _ := encodeReply(page(true, partialAt(1, 1, true), partialAt(2, 2, false)), replyBudget)
	f.Add(b)
	f.Add(encodeError(errors.New("x")))
	f.Fuzz(func(t *testing.T, b []byte) {
		pg, err := decodeReply(b, q)
		if err != nil {
			return
		}
		out, err := encodeReply(pg, math.MaxInt32)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != string(b) {
			t.Fatalf("reply %x re-encodes to %x", b, out)
		}
	})
}

// TestLocal: a node's page holds its open and closed windows in page order,
// a window both in the log and open (a restart replaying) once, as logged;
// limit, cursor and More page through them.
func TestLocal(t *testing.T) {
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: vfs.NewMem()})
	require.NoError(t, err)
	defer l.Close()
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	var outs []store.Output
	for _, i := range []int{4, 3, 1} { // in the order they closed
		p := partialAt(i, float64(i), true)
		skb, _ := p.Sketch.MarshalBinary()
		outs = append(outs, store.Output{Window: &event.WindowRecord{Stream: "temp", SizeMS: 1000, Start: p.Start, Count: 1,
			Sum: p.Sum, Min: p.Min, Max: p.Max, Last: p.Last, LastTS: p.LastTS, P50: p.Min, P95: p.Min, P99: p.Min, Sketch: skb}})
	}
	_, err = st.AppendOutputs(outs)
	require.NoError(t, err)
	src := Local{Store: st, Open: func(string, string, time.Duration, int64, int64) []window.Partial {
		return []window.Partial{partialAt(4, 9, false), partialAt(0, 0, false), partialAt(2, 2, false)}
	}}
	q := Query{Stream: "temp", From: math.MinInt64, To: math.MaxInt64, Limit: 10}
	pg, err := src.Partials(t.Context(), q)
	require.NoError(t, err)
	require.Equal(t, []int64{99, 98, 97, 96, 95}, starts(pg))
	require.False(t, pg.More)
	require.True(t, pg.Partials[4].Final, "the logged result, not the replaying open window")
	require.Equal(t, 4.0, pg.Partials[4].Sum)
	require.False(t, pg.Partials[0].Final)

	q.Limit = 2
	pg, err = src.Partials(t.Context(), q)
	require.NoError(t, err)
	require.Equal(t, []int64{99, 98}, starts(pg))
	require.True(t, pg.More)
	q.After = &pg.Partials[1].Key
	pg, err = src.Partials(t.Context(), q)
	require.NoError(t, err)
	require.Equal(t, []int64{97, 96}, starts(pg))
	require.True(t, pg.More)
	q.After = &pg.Partials[1].Key
	pg, err = src.Partials(t.Context(), q)
	require.NoError(t, err)
	require.Equal(t, []int64{95}, starts(pg))
	require.False(t, pg.More)
}

// TestLocalStopsReadingAtTheCutoff: a one-stream query stops reading the log
// early, but not before every result that ends with the page's last window:
// those with the same end come in the log in device order, and the page
// wants the first devices, read last.
func TestLocalStopsReadingAtTheCutoff(t *testing.T) {
	l, err := buffer.Open(buffer.Options{Dir: "/d/log", FS: vfs.NewMem()})
	require.NoError(t, err)
	defer l.Close()
	st, err := store.Open(l, store.Options{})
	require.NoError(t, err)
	var outs []store.Output
	for _, i := range []int{3, 2, 1} { // in the order they closed
		for d := range 10 {
			p := partialAt(i, 1, true)
			skb, _ := p.Sketch.MarshalBinary()
			outs = append(outs, store.Output{Window: &event.WindowRecord{Stream: "temp", DeviceID: fmt.Sprintf("d%d", d), SizeMS: 1000,
				Start: p.Start, Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1, LastTS: p.LastTS, P50: 1, P95: 1, P99: 1, Sketch: skb}})
		}
	}
	_, err = st.AppendOutputs(outs)
	require.NoError(t, err)
	src := Local{Store: st}
	q := Query{Stream: "temp", DeviceID: "*", From: math.MinInt64, To: math.MaxInt64, Limit: 3}
	var got []string
	for {
		pg, err := src.Partials(t.Context(), q)
		require.NoError(t, err)
		for _, p := range pg.Partials {
			got = append(got, fmt.Sprintf("%d/%s", (p.Start-t0)/1000, p.DeviceID))
		}
		if !pg.More {
			break
		}
		q.After = &pg.Partials[len(pg.Partials)-1].Key
	}
	var want []string
	for _, s := range []int{98, 97, 96} {
		for d := range 10 {
			want = append(want, fmt.Sprintf("%d/d%d", s, d))
		}
	}
	require.Equal(t, want, got)
}
