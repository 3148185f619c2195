package enginetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// appendN appends n records named prefix-i in batches of up to 8 with payload
// sizes in [lo, hi) and returns them by offset.
func appendN(t *testing.T, e *handle, prefix string, n, lo, hi int) map[uint64][]byte {
	t.Helper()
	sent := make(map[uint64][]byte, n)
	for i := 0; i < n; {
		batch := make([][]byte, min(1+i%8, n-i))
		for j := range batch {
			id := fmt.Sprintf("%s-%d", prefix, i+j)
			batch[j] = makePayload(id, payloadSize(id, lo, hi))
		}
		first, err := e.Append(batch...)
		require.NoError(t, err)
		for j, p := range batch {
			sent[first+uint64(j)] = p
		}
		i += len(batch)
	}
	return sent
}

// requireHeld requires the engine's records to be dense from FirstOffset to
// NextOffset, and every record of sent at or after FirstOffset to read back
// byte for byte. It returns the records.
func requireHeld(t *testing.T, e *handle, sent map[uint64][]byte) []record {
	t.Helper()
	first, next := e.FirstOffset(), e.NextOffset()
	recs := readAll(t, e, 0)
	requireDense(t, recs, first, next)
	for off, p := range sent {
		if off < first {
			continue
		}
		require.Less(t, off, next, "record %d was acknowledged but NextOffset is %d", off, next)
		require.Equal(t, p, recs[off-first].payload, "payload of record %d", off)
	}
	return recs
}

// testReopen: what was acknowledged is there after Close and Open, and offsets go
// on after the last one, also when retention had deleted records.
func testReopen(t *testing.T, open Opener) {
	t.Run("all", func(t *testing.T) {
		dir := t.TempDir()
		e := openEngine(t, open, dir, bigMaxBytes)
		e.shut(t)
		e = openEngine(t, open, dir, bigMaxBytes)
		require.Equal(t, e.FirstOffset(), e.NextOffset(), "an engine reopened without appends is empty")
		start := e.NextOffset()
		sent := appendN(t, e, "reopen", 500, 1, 2000)
		next := e.NextOffset()
		require.Equal(t, start+500, next)
		e.shut(t)

		for round := range 3 {
			e = openEngine(t, open, dir, bigMaxBytes)
			require.Equal(t, next, e.NextOffset(), "round %d: NextOffset continues after reopen", round)
			require.Equal(t, start, e.FirstOffset(), "round %d: nothing deleted below the retention limit", round)
			requireIdle(t, e)
			requireHeld(t, e, sent)
			more := appendN(t, e, fmt.Sprintf("reopen%d", round), 50, 1, 2000)
			for off, p := range more {
				require.GreaterOrEqual(t, off, next, "round %d: offset %d reused", round, off)
				sent[off] = p
			}
			next += 50
			e.shut(t)
		}
	})

	t.Run("after_retention", func(t *testing.T) {
		const maxBytes = 256 << 10
		dir := t.TempDir()
		e := openEngine(t, open, dir, maxBytes)
		sent := map[uint64][]byte{}
		start := e.FirstOffset()
		// 64 records of 1 KiB on average a round; bounded at 16 × maxBytes.
		for i := 0; e.FirstOffset() == start || i < 4; i++ {
			require.Less(t, i, 64, "FirstOffset still %d after %d KiB of payload with a limit of %d KiB",
				start, i*64, maxBytes>>10)
			for off, p := range appendN(t, e, fmt.Sprintf("ret%d", i), 64, 512, 1536) {
				sent[off] = p
			}
		}
		first, next := e.FirstOffset(), e.NextOffset()
		requireHeld(t, e, sent)
		e.shut(t)

		for round := range 3 {
			e = openEngine(t, open, dir, maxBytes)
			require.Equal(t, next, e.NextOffset(), "round %d: NextOffset continues after reopen", round)
			require.GreaterOrEqual(t, e.FirstOffset(), first, "round %d: deleted records do not come back", round)
			requireIdle(t, e)
			requireHeld(t, e, sent)
			first = e.FirstOffset()
			off, err := e.Append(makePayload(fmt.Sprintf("after%d", round), 100))
			require.NoError(t, err)
			require.Equal(t, next, off, "round %d: the first append after reopen gets the old NextOffset", round)
			sent[off] = makePayload(fmt.Sprintf("after%d", round), 100)
			next++
			e.shut(t)
		}
	})
}
