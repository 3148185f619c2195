package pressure

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func scanOf(items []Item) Scan {
	return func(yield func(Item) bool) error {
		for _, it := range items {
			if !yield(it) {
				return nil
			}
		}
		return nil
	}
}

// one sink whose every lane's cursor is at off
func cursorsAt(off uint64) [NumLanes]uint64 { return [NumLanes]uint64{off, off, off, off} }

func TestSyncedEvictsLowestLaneFirst(t *testing.T) {
	var items []Item
	for i := range 40 {
		items = append(items, Item{Offset: uint64(i), Lane: i % NumLanes, Bytes: 10})
	}
	// Two sinks: the second has confirmed less, so only offsets below 20
	// are synced.
	sinks := Sinks{cursorsAt(40), cursorsAt(20)}
	c, err := Synced(scanOf(items), sinks, 70)
	require.NoError(t, err)
	// 5 low records (3, 7, …, 19) = 50 bytes, then 2 normal ones, oldest first.
	require.Equal(t, []uint64{2, 3, 6, 7, 11, 15, 19}, c.Offsets)
	require.Equal(t, int64(70), 10*int64(len(c.Offsets)), "70 bytes chosen, as needed")

	all, err := Synced(scanOf(items), sinks, -1)
	require.NoError(t, err)
	require.Len(t, all.Offsets, 20, "need < 0 evicts every synced record")

	none, err := Synced(scanOf(items), nil, -1)
	require.NoError(t, err)
	require.Empty(t, none.Offsets, "with no sink nothing is synced")
}

func TestDownsampleKeepsOneInTen(t *testing.T) {
	var items []Item
	for i := range 200 {
		items = append(items, Item{Offset: uint64(i), Lane: LaneLow, Event: true, Stream: 1, Device: uint32(i % 2), Received: 1000, Bytes: 10})
	}
	items = append(items,
		Item{Offset: 200, Lane: LaneNormal, Event: true, Stream: 2, Received: 1000},
		Item{Offset: 201, Lane: LaneLow, Event: true, Stream: 1, Received: 5000}, // too young
		Item{Offset: 202, Lane: LaneLow, Event: true, Stream: 1, Received: 1000},
	)
	sinks := Sinks{cursorsAt(0)}
	c, stop, young, err := Downsample(scanOf(items), sinks, 20, 10, 2000)
	require.NoError(t, err)
	require.True(t, young)
	require.Equal(t, uint64(201), stop, "the scan stops at the first event too young")
	// The first 20 low records may be in flight; of the 180 after them, each
	// device keeps its 1st, 11th, 21st … (90 per device: 9 kept, 81 gone).
	require.Len(t, c.Offsets, 162)
	removed := map[uint64]bool{}
	for _, off := range c.Offsets {
		removed[off] = true
		require.GreaterOrEqual(t, off, uint64(20))
	}
	for dev := range 2 {
		var kept []uint64
		for off := 20 + dev; off < 200; off += 2 {
			if !removed[uint64(off)] {
				kept = append(kept, uint64(off))
			}
		}
		require.Len(t, kept, 9, "device %d keeps one in ten", dev)
		require.Equal(t, uint64(20+dev), kept[0])
		require.Equal(t, uint64(40+dev), kept[1], "every tenth of the device's events")
	}
}

func TestDropOldestCriticalLast(t *testing.T) {
	var items []Item
	for i := range 100 {
		lane := LaneNormal
		if i%10 == 0 {
			lane = LaneCritical
		}
		items = append(items, Item{Offset: uint64(i), Lane: lane, Bytes: 10})
	}
	items[5].Ledger = true
	sinks := Sinks{cursorsAt(0)}
	c, err := DropOldest(scanOf(items), sinks, 3, 0.10)
	require.NoError(t, err)
	// 100 pending, 10 to drop: not the first 3 of each lane (in flight: 0,
	// 10, 20 and 1, 2, 3), not the ledger record at 5, not a critical one.
	require.Equal(t, []uint64{4, 6, 7, 8, 9, 11, 12, 13, 14, 15}, c.Offsets)

	// Hardly anything but critical records: the oldest of those go too.
	for i := range items {
		items[i].Lane = LaneCritical
		items[i].Ledger = false
	}
	for i := 50; i < 55; i++ {
		items[i].Lane = LaneLow
	}
	c, err = DropOldest(scanOf(items), sinks, 3, 0.10)
	require.NoError(t, err)
	// The two low records not in flight, then the 8 oldest critical ones.
	require.Equal(t, []uint64{3, 4, 5, 6, 7, 8, 9, 10, 53, 54}, c.Offsets)

	synced, err := DropOldest(scanOf(items), Sinks{cursorsAt(math.MaxUint64)}, 3, 0.10)
	require.NoError(t, err)
	require.Empty(t, synced.Offsets, "synced records are not pending")
}
