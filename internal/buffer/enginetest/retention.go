package enginetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// testRetention: with a limit of 1 MiB and 4 MiB appended, the oldest records go,
// the newest stay, and the engine's size stays near the limit:
//
//   - Stats.Bytes ≤ retentionSlack × maxBytes after every Append (an engine
//     deletes in units and after the fact; see retentionSlack);
//   - at the end, Stats.Bytes and the payload bytes still readable are each
//     between maxBytes/retentionFloor and retentionSlack × maxBytes: retention
//     neither lets the engine grow nor deletes far more than it must.
func testRetention(t *testing.T, open Opener) {
	const maxBytes = 1 << 20
	e := openEngine(t, open, t.TempDir(), maxBytes)
	start := e.FirstOffset()
	sent := map[uint64][]byte{}
	var appended int
	for i := 0; appended < 4*maxBytes; i++ {
		batch := make([][]byte, 8)
		for j := range batch {
			id := fmt.Sprintf("ret-%d-%d", i, j)
			batch[j] = makePayload(id, payloadSize(id, 512, 1536))
			appended += len(batch[j])
		}
		first, err := e.Append(batch...)
		require.NoError(t, err)
		for j, p := range batch {
			sent[first+uint64(j)] = p
		}
		require.LessOrEqual(t, e.Stats().Bytes, int64(retentionSlack*maxBytes),
			"Stats.Bytes after %d KiB appended with a limit of %d KiB", appended>>10, maxBytes>>10)
	}
	requireIdle(t, e)
	first, next := e.FirstOffset(), e.NextOffset()
	require.Greater(t, first, start, "retention deleted the oldest records")

	recs := readAll(t, e, 0)
	requireDense(t, recs, first, next)
	require.Equal(t, first, recs[0].off, "reading from 0 starts at FirstOffset")
	var held int64
	for _, r := range recs {
		require.Equal(t, sent[r.off], r.payload, "payload of record %d", r.off)
		held += int64(len(r.payload))
	}
	require.Equal(t, next-1, recs[len(recs)-1].off, "the newest record is kept")
	s := e.Stats()
	t.Logf("limit %d KiB: Stats.Bytes %d KiB, payload held %d KiB in %d records, %d deleted",
		maxBytes>>10, s.Bytes>>10, held>>10, len(recs), first-start)
	require.GreaterOrEqual(t, held, int64(maxBytes/retentionFloor), "payload bytes held")
	require.LessOrEqual(t, held, int64(retentionSlack*maxBytes), "payload bytes held")
	require.GreaterOrEqual(t, s.Bytes, int64(maxBytes/retentionFloor), "Stats.Bytes")
	require.LessOrEqual(t, s.Bytes, int64(retentionSlack*maxBytes), "Stats.Bytes")
	requireBytesFrom(t, e)
	e.shut(t)
}
