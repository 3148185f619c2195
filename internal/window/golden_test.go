package window

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEngineEncodingsUnchanged pins, by hash, the Results and the stream state
// encodings of a workload that exercises every store shape (one sign or
// both, few and many buckets, counts past 255 and 65 535 in a bucket): they are
// the bytes the engine produced before counts were packed (commit 1c2a23b).
func TestEngineEncodingsUnchanged(t *testing.T) {
	if raceEnabled {
		t.Skip("a single goroutine's bytes: nothing for the race detector, and a million events under it take CI 14 s")
	}
	h := sha256.New()
	e, err := New(Options{OnClose: func(r Result) {
		sk, _ := r.Sketch.MarshalBinary()
		fmt.Fprintf(h, "%s|%s|%v|%d|%d|%x|%x|%x|%x|%x|%x|%x|%x|%x|%v|%x\n", r.Stream, r.DeviceID, r.Size, r.Start, r.Count,
			math.Float64bits(r.Sum), math.Float64bits(r.Min), math.Float64bits(r.Max), math.Float64bits(r.Mean),
			math.Float64bits(r.Last), r.LastTS, math.Float64bits(r.P50), math.Float64bits(r.P95), math.Float64bits(r.P99), r.Overflow, sk)
	}})
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(5, 6))
	const t0 int64 = 1_767_225_600_000
	for n := range 1_000_000 {
		d := n % 50
		var v float64
		switch d % 10 {
		case 0: // steady
			v = 20 + float64(n%3)/100
		case 1: // spread
			v = float64(1500+(n*37)%1500) / 100
		case 2: // both signs and zero
			v = float64(rng.IntN(2001)-1000) / 10
		case 3: // negative only
			v = -float64(1500+(n*37)%1500) / 100
		case 4: // wide range
			v = math.Exp(rng.NormFloat64() * 20)
		default: // one value, many times
			v = 42
		}
		e.Add(fmt.Sprintf("s%d", d%2), fmt.Sprintf("dev-%d", d), t0+int64(n)*3, v)
		if n%125_000 == 124_999 {
			for _, s := range e.Streams() {
				h.Write(e.AppendStreamState(nil, s))
			}
		}
	}
	for _, s := range e.Streams() {
		h.Write(e.AppendStreamState(nil, s))
		e.Advance(s, math.MaxInt64/2)
	}
	require.Equal(t, "d6e54dbfee65af3c0413e9e7384522cfb8a4c7a645954dea485471b92c965c36", fmt.Sprintf("%x", h.Sum(nil)))
}
