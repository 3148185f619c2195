package enginetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// requireNext reads one record and requires it to be off with payload p.
func requireNext(t *testing.T, r buffer.RecordReader, off uint64, p []byte) {
	t.Helper()
	got, payload, err := r.Next()
	require.NoError(t, err, "reading record %d", off)
	require.Equal(t, off, got)
	require.Equal(t, p, payload, "payload of record %d", off)
	require.Equal(t, off+1, r.Position(), "Position after reading %d", off)
}

func requireEOF(t *testing.T, r buffer.RecordReader) {
	t.Helper()
	off, _, err := r.Next()
	require.ErrorIs(t, err, io.EOF, "expected the durable end, got record %d", off)
}

// testReaders: readers start where asked, follow appends after io.EOF, skip what
// retention deleted, and WaitDurable returns for durable offsets, on
// cancellation and on Close.
func testReaders(t *testing.T, open Opener) {
	t.Run("follow", func(t *testing.T) {
		e := openEngine(t, open, t.TempDir(), bigMaxBytes)
		start := e.NextOffset()
		r := e.NewReader(start)
		defer r.Close()
		require.Equal(t, start, r.Position())
		requireEOF(t, r)
		requireEOF(t, r)
		// One by one and in batches, past segment or file boundaries: 4 KiB
		// payloads, 2 MiB in all.
		sent := map[uint64][]byte{}
		for i := 0; i < 512; {
			n := 1 + i%5
			batch := make([][]byte, n)
			for j := range batch {
				batch[j] = makePayload(fmt.Sprintf("f%d", i+j), 4096)
			}
			first, err := e.Append(batch...)
			require.NoError(t, err)
			for j, p := range batch {
				sent[first+uint64(j)] = p
				requireNext(t, r, first+uint64(j), p)
			}
			requireEOF(t, r)
			i += n
		}
		require.NoError(t, r.Close())
		next := e.NextOffset()

		// NewReader(from) starts at from, wherever from is.
		for _, from := range []uint64{start, start + 1, start + 255, start + 256, (start + next) / 2, next - 1} {
			r := e.NewReader(from)
			require.Equal(t, from, r.Position())
			requireNext(t, r, from, sent[from])
			if from+1 < next {
				requireNext(t, r, from+1, sent[from+1])
			}
			require.NoError(t, r.Close())
		}
		// From NextOffset and beyond: io.EOF, then exactly the records from
		// `from` once they are appended.
		atEnd, beyond := e.NewReader(next), e.NewReader(next+3)
		defer atEnd.Close()
		defer beyond.Close()
		requireEOF(t, atEnd)
		requireEOF(t, beyond)
		batch := make([][]byte, 6)
		for j := range batch {
			batch[j] = makePayload(fmt.Sprintf("end%d", j), 10)
		}
		first, err := e.Append(batch...)
		require.NoError(t, err)
		require.Equal(t, next, first)
		for j, p := range batch {
			requireNext(t, atEnd, next+uint64(j), p)
		}
		requireNext(t, beyond, next+3, batch[3])
		requireNext(t, beyond, next+4, batch[4])
		requireNext(t, beyond, next+5, batch[5])
		requireEOF(t, atEnd)
		requireEOF(t, beyond)
		require.NoError(t, atEnd.Close())
		require.NoError(t, beyond.Close())
		e.shut(t)
	})

	t.Run("retention", func(t *testing.T) {
		const maxBytes = 256 << 10
		e := openEngine(t, open, t.TempDir(), maxBytes)
		start := e.FirstOffset()
		sent := map[uint64][]byte{}
		for i := 0; e.FirstOffset() == start; i++ {
			require.Less(t, i, 64, "FirstOffset still %d after %d KiB with a limit of %d KiB", start, i*64, maxBytes>>10)
			for off, p := range appendN(t, e, fmt.Sprintf("rr%d", i), 64, 512, 1536) {
				sent[off] = p
			}
		}
		// From before FirstOffset: the oldest record held is the first read.
		first := e.FirstOffset()
		for _, from := range []uint64{0, start, first - 1} {
			r := e.NewReader(from)
			requireNext(t, r, first, sent[first])
			require.NoError(t, r.Close())
		}

		// Readers positioned in the oldest records while retention deletes
		// them go on in offset order, with the right payloads, to the end.
		oldest := e.NewReader(first)
		defer oldest.Close()
		requireNext(t, oldest, first, sent[first])
		fresh := e.NewReader(first) // positioned only at its first Next
		defer fresh.Close()
		for i := 0; e.FirstOffset() <= first+1 || i < 8; i++ {
			require.Less(t, i, 64, "FirstOffset did not pass %d", first+1)
			for off, p := range appendN(t, e, fmt.Sprintf("rr-more%d", i), 64, 512, 1536) {
				sent[off] = p
			}
		}
		next := e.NextOffset()
		for name, r := range map[string]buffer.RecordReader{"reader overtaken by retention": oldest, "reader from a deleted offset": fresh} {
			prev, n := uint64(0), 0
			for {
				off, p, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				require.NoError(t, err, name)
				require.True(t, n == 0 || off > prev, "%s: %d after %d", name, off, prev)
				require.Equal(t, sent[off], p, "%s: payload of %d", name, off)
				prev = off
				n++
				require.LessOrEqual(t, n, int(next-first), name)
			}
			require.Equal(t, next-1, prev, "%s reads to the end", name)
		}
		e.shut(t)
	})

	t.Run("wait_durable", func(t *testing.T) {
		e := openEngine(t, open, t.TempDir(), bigMaxBytes)
		ctx := context.Background()
		require.NoError(t, e.WaitDurable(ctx, 0))
		require.NoError(t, e.WaitDurable(ctx, e.DurableOffset()))
		first, err := e.Append([]byte("a"), []byte("b"))
		require.NoError(t, err)
		require.NoError(t, e.WaitDurable(ctx, first+2), "offsets acknowledged by Append are durable")

		// A waiter for an offset appended later returns once it is durable.
		next := e.NextOffset()
		done := make(chan error, 1)
		go func() { done <- e.WaitDurable(ctx, next+1) }()
		off, err := e.Append([]byte("c"))
		require.NoError(t, err)
		require.Equal(t, next, off)
		bounded(t, "WaitDurable after the offset became durable", func() { err = <-done })
		require.NoError(t, err)

		// Cancelled before or while waiting for an offset nobody appends.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, e.WaitDurable(cctx, e.NextOffset()+1), context.Canceled)
		cctx, cancel = context.WithCancel(ctx)
		target := e.NextOffset() + 2
		go func() { done <- e.WaitDurable(cctx, target) }()
		_, err = e.Append([]byte("d")) // wakes the waiter short of its offset
		require.NoError(t, err)
		cancel()
		bounded(t, "WaitDurable after its context was cancelled", func() { err = <-done })
		require.ErrorIs(t, err, context.Canceled)

		// Close ends a waiter for an offset nobody appends.
		target = e.NextOffset() + 1
		go func() { done <- e.WaitDurable(ctx, target) }()
		time.Sleep(20 * time.Millisecond) // most likely waiting by now; ErrClosed either way
		e.shut(t)
		bounded(t, "WaitDurable after Close", func() { err = <-done })
		require.ErrorIs(t, err, buffer.ErrClosed)
	})
}
