package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// TestFedHoldsWhatTheRecordsDecodeTo: every event the Fed holds for an offset
// is what event.Peek gives for the record at that offset; events appended
// before the Fed started, retries dropped as duplicates and events
// overwritten in the ring are not in it.
func TestFedHoldsWhatTheRecordsDecodeTo(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.s.Append(ctx, []event.Event{ev("early", "s", t0, 1)})
	require.NoError(t, err)
	fed := f.s.Fed()
	for i := range fedSlots/1000 + 10 {
		evs := make([]event.Event, 1000)
		for j := range evs {
			evs[j] = ev(fmt.Sprint("d", j%7), fmt.Sprint("s", j%3), t0.Add(time.Duration(i*1000+j)*time.Millisecond), float64(i*1000+j))
			if j == 5 {
				evs[j].ID = "retry" // stored once, then a duplicate
			}
		}
		_, err := f.s.Append(ctx, evs)
		require.NoError(t, err)
	}
	next := f.log.NextOffset()
	got := make([]FedEvent, next+10)
	fed.Copy(0, got)
	r := f.log.NewReader(0)
	defer r.Close()
	held := 0
	for {
		off, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		e := got[off]
		if e.Next != off+1 {
			continue
		}
		held++
		require.GreaterOrEqual(t, off, next-fedSlots, "only the newest events are held")
		v, ok := event.Peek(p)
		require.True(t, ok)
		require.Equal(t, FedEvent{Next: off + 1, Stream: string(v.Stream), Device: string(v.DeviceID), TS: v.TS, Value: v.Value}, e)
	}
	require.Equal(t, fedSlots, held, "a full ring")
}

// TestFedLeavesOutNonFiniteValues: a record with a value that is not finite
// does not decode to an event, so the Fed does not hold one for it.
func TestFedLeavesOutNonFiniteValues(t *testing.T) {
	f := newFixture(t)
	fed := f.s.Fed()
	_, err := f.s.Append(context.Background(), []event.Event{ev("d", "s", t0, math.Inf(1)), ev("d", "s", t0.Add(1), 2)})
	require.NoError(t, err)
	got := make([]FedEvent, 2)
	fed.Copy(0, got)
	require.Zero(t, got[0].Next)
	require.Equal(t, uint64(2), got[1].Next)
}
