package window

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDropAndRestoreMatchesUninterrupted takes random streams out of one
// engine (AppendStreamState, DropStream) and puts them back (RestoreStream)
// between random calls, and requires the results, open windows, watermarks
// and late counts of an engine that kept them.
func TestDropAndRestoreMatchesUninterrupted(t *testing.T) {
	seeds := uint64(30)
	if testing.Short() || raceEnabled {
		seeds = 10
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 17))
		sc := randomScenario(rng)
		calls := randomCalls(rng, sc)
		var gotA, gotB []Result
		o := Options{Sizes: sc.sizes, AllowedLateness: sc.lateness, Accuracy: sc.accuracy}
		a, b := collect(t, o, &gotA), collect(t, o, &gotB)
		out := map[string][]byte{} // dropped from b
		for i, c := range calls {
			if st, ok := out[c.stream]; ok {
				name, err := b.RestoreStream(st)
				require.NoError(t, err)
				require.Equal(t, c.stream, name)
				delete(out, c.stream)
			}
			c.apply(a)
			c.apply(b)
			if rng.IntN(4) == 0 {
				name := b.Streams()[rng.IntN(len(b.Streams()))]
				open := b.StreamOpenWindows(name)
				st := b.AppendStreamState(nil, name)
				n, ok := b.DropStream(name)
				require.True(t, ok)
				require.Equal(t, open, n)
				out[name] = st
				if i%64 == 0 {
					require.Equal(t, a.OpenWindows(), b.OpenWindows()+openOf(t, o, out), "seed %d call %d", seed, i)
				}
			}
		}
		require.Equal(t, allBits(gotA), allBits(gotB), "seed %d", seed)
		for _, st := range out {
			_, err := b.RestoreStream(st)
			require.NoError(t, err)
		}
		require.Equal(t, a.OpenWindows(), b.OpenWindows())
		for _, name := range a.Streams() {
			require.Equal(t, a.AppendStreamState(nil, name), b.AppendStreamState(nil, name), "seed %d stream %s", seed, name)
		}
	}
}

// openOf counts the open windows of dropped states.
func openOf(t *testing.T, o Options, states map[string][]byte) int {
	n := 0
	for _, st := range states {
		e, err := New(o)
		require.NoError(t, err)
		name, err := e.RestoreStream(st)
		require.NoError(t, err)
		n += e.StreamOpenWindows(name)
	}
	return n
}

func TestDropStreamUnknown(t *testing.T) {
	e, err := New(Options{})
	require.NoError(t, err)
	_, ok := e.DropStream("nope")
	require.False(t, ok)
	e.Add("s", "d", 1_000, 1)
	e.last = e.streams["s"]
	_, ok = e.DropStream("s")
	require.True(t, ok)
	require.Equal(t, 0, e.OpenWindows())
	require.Empty(t, e.Streams())
	e.Add("s", "d", 2_000, 1) // a new stream, not the dropped one
	require.Equal(t, 6, e.OpenWindows())
}
