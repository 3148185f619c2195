package enginetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// testAppendRead: Append returns the first of consecutive offsets, the records
// read back in order and byte for byte, and refused payloads store nothing.
func testAppendRead(t *testing.T, open Opener) {
	e := openEngine(t, open, t.TempDir(), bigMaxBytes)
	requireIdle(t, e)
	require.Equal(t, e.NextOffset(), e.FirstOffset(), "an empty engine holds nothing")
	require.Empty(t, readAll(t, e, 0), "an empty engine has no records")

	// Sizes around framing and page boundaries, bytes of every value, and the
	// largest payload allowed.
	sizes := []int{1, 2, 15, 16, 17, 255, 256, 4095, 4096, 4097, 65536}
	var sent [][]byte
	for i, n := range sizes {
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(i + j)
		}
		sent = append(sent, p)
	}
	maxed := make([]byte, buffer.MaxRecordSize)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(maxed)
	sent = append(sent, maxed)
	for i := range 200 {
		id := fmt.Sprintf("ar-%d", i)
		sent = append(sent, makePayload(id, payloadSize(id, 0, 3000)))
	}

	start := e.NextOffset()
	want := start
	// Appends of 1, 2, 3, … records, so batches of several sizes share the log.
	for i, n := 0, 1; i < len(sent); i, n = i+n, n%7+1 {
		batch := sent[i:min(i+n, len(sent))]
		first, err := e.Append(batch...)
		require.NoError(t, err)
		require.Equal(t, want, first, "Append returns the offset after the previous append's last")
		want += uint64(len(batch))
		require.Equal(t, want, e.NextOffset(), "NextOffset advances by one per record")
		require.GreaterOrEqual(t, e.DurableOffset(), want, "records are durable when Append returns")
	}

	recs := readAll(t, e, start)
	requireDense(t, recs, start, want)
	for i, r := range recs {
		require.Equal(t, sent[i], r.payload, "payload of record %d", r.off)
	}
	requireIdle(t, e)
	requireBytesFrom(t, e)

	// Empty and oversize payloads are refused, alone or within a batch, and
	// nothing of a refused batch is stored.
	ok := []byte("fine")
	for name, batch := range map[string][][]byte{
		"empty":             {{}},
		"nil":               {nil},
		"oversize":          {make([]byte, buffer.MaxRecordSize+1)},
		"empty in batch":    {ok, {}, ok},
		"oversize in batch": {ok, ok, make([]byte, buffer.MaxRecordSize+1)},
	} {
		_, err := e.Append(batch...)
		require.ErrorIs(t, err, buffer.ErrTooLarge, name)
		require.Equal(t, want, e.NextOffset(), "%s: a refused append stores nothing", name)
	}
	require.NoError(t, e.Err(), "a refused payload does not fail the engine")
	first, err := e.Append(ok)
	require.NoError(t, err, "appends go on after a refused payload")
	require.Equal(t, want, first)
	recs = readAll(t, e, want)
	requireDense(t, recs, want, want+1)
	require.Equal(t, ok, recs[0].payload)
	e.shut(t)
}

// requireBytesFrom: BytesFrom is an estimate, so only what any estimate of "the
// stored bytes of the records from off on" satisfies is required: for off in
// [FirstOffset, NextOffset] it is at least zero and at most BytesFrom(FirstOffset),
// which is more than BytesFrom(NextOffset) when records are held; offsets already
// deleted count from FirstOffset. Not required, because engine.go does not say
// so and engines differ: that it does not grow with off (the native log's
// interpolation breaks that for records of very uneven sizes), and that it is
// at most Stats.Bytes (pebblelog counts logical bytes there and disk usage in
// Stats).
func requireBytesFrom(t *testing.T, e buffer.Engine) {
	t.Helper()
	first, next := e.FirstOffset(), e.NextOffset()
	all := e.BytesFrom(first)
	require.Equal(t, all, e.BytesFrom(0), "BytesFrom(0) counts from FirstOffset")
	if first > 0 {
		require.Equal(t, all, e.BytesFrom(first-1), "BytesFrom(FirstOffset-1) counts from FirstOffset")
	}
	for off := first; off <= next; off++ {
		b := e.BytesFrom(off)
		require.GreaterOrEqual(t, b, int64(0), "BytesFrom(%d)", off)
		require.LessOrEqual(t, b, all, "BytesFrom(%d) ≤ BytesFrom(FirstOffset)", off)
	}
	if next > first {
		require.Greater(t, all, e.BytesFrom(next), "records are held from FirstOffset")
	}
}

// testConcurrentAppenders: offsets handed to concurrent appenders are unique and
// together dense, each carries its appender's payload, each is durable when its
// Append returns, and a reader tailing the engine meanwhile sees every record, in
// order, with its payload, each of them durable.
func testConcurrentAppenders(t *testing.T, open Opener) {
	const appenders, perAppender = 32, 300
	e := openEngine(t, open, t.TempDir(), bigMaxBytes)
	start := e.NextOffset()

	type ack struct {
		first uint64
		ids   []string
	}
	acks := make([][]ack, appenders)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < perAppender; {
				n := min(1+seq%4, perAppender-seq)
				ids := make([]string, n)
				batch := make([][]byte, n)
				for i := range n {
					ids[i] = fmt.Sprintf("c%d-%d", a, seq+i)
					batch[i] = makePayload(ids[i], payloadSize(ids[i], 0, 600))
				}
				first, err := e.Append(batch...)
				if err != nil {
					t.Errorf("appender %d: %v", a, err)
					cancel()
					return
				}
				if d := e.DurableOffset(); d < first+uint64(n) {
					t.Errorf("appender %d: Append returned %d+%d with DurableOffset %d", a, first, n, d)
				}
				acks[a] = append(acks[a], ack{first: first, ids: ids})
				seq += n
			}
		}()
	}

	// The tailing reader: every record it returns is durable and follows the
	// one before; at io.EOF it waits for the next offset to become durable.
	const total = appenders * perAppender
	tailed := make(map[uint64]string, total)
	tailDone := make(chan struct{})
	go func() {
		defer close(tailDone)
		r := e.NewReader(start)
		defer r.Close()
		prev := start - 1
		for len(tailed) < total {
			off, p, err := r.Next()
			if errors.Is(err, io.EOF) {
				if err := e.WaitDurable(ctx, r.Position()+1); err != nil {
					return // the appenders failed
				}
				continue
			}
			if err != nil {
				t.Errorf("tailing reader: %v", err)
				return
			}
			// Durable means it stays: a record a reader returned must not be
			// one whose commit then fails. (Whether DurableOffset must already
			// be past it is not required; the native log advances DurableOffset
			// just after making a commit visible to readers. That readers see
			// only records that survive a crash is checked by the crash subtest.)
			if err := e.WaitDurable(ctx, off+1); err != nil && ctx.Err() == nil {
				t.Errorf("tailing reader returned offset %d, which did not become durable: %v", off, err)
			}
			if off != prev+1 {
				t.Errorf("tailing reader returned %d after %d", off, prev)
				return
			}
			if r.Position() != off+1 {
				t.Errorf("reader Position %d after reading %d", r.Position(), off)
			}
			prev = off
			id, ok := parsePayload(p)
			if !ok {
				t.Errorf("tailing reader: record %d has a payload no appender sent", off)
			}
			tailed[off] = id
		}
	}()
	wg.Wait()
	<-tailDone
	if t.Failed() {
		t.FailNow()
	}

	want := map[uint64]string{}
	for a := range appenders {
		for _, k := range acks[a] {
			for i, id := range k.ids {
				off := k.first + uint64(i)
				other, dup := want[off]
				require.False(t, dup, "offset %d returned for %s and %s", off, other, id)
				want[off] = id
			}
		}
	}
	require.Len(t, want, total)
	require.Equal(t, start+total, e.NextOffset())
	for off := range want {
		require.True(t, off >= start && off < start+total, "offset %d outside [%d, %d): offsets not dense", off, start, start+total)
	}
	recs := readAll(t, e, start)
	requireDense(t, recs, start, start+total)
	for _, r := range recs {
		id, ok := parsePayload(r.payload)
		require.True(t, ok, "record %d has a payload no appender sent", r.off)
		require.Equal(t, want[r.off], id, "record %d holds the payload of the append that got its offset", r.off)
	}
	require.Equal(t, want, tailed, "the tailing reader saw every record with its payload")
	requireIdle(t, e)
	e.shut(t)
}
