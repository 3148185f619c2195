package pressure

import (
	"math"
)

// What the levels do to the buffer itself (DESIGN §7), as pure choices of
// records; the node carries them out (buffer.Remover) and accounts for the
// losses in its ledger:
//
//	critical   evict synced records, lowest priority first, until enough is free
//	emergency  evict every synced record; downsample old unsynced low-priority
//	           events 10:1
//	full       drop the oldest 10 % of the pending records, critical lane last
//
// A record is synced once every sink has confirmed it, pending until then.
// Some pending records are never chosen: those a sink may have in flight
// (protected, below), and ledger records, which account for the others.

// Lanes, most urgent first (uplink.Lane's order).
const (
	LaneCritical = iota
	LaneHigh
	LaneNormal
	LaneLow
	NumLanes
)

// Item is what the choices need to know of one buffered record.
type Item struct {
	Offset   uint64
	Lane     int    // LaneCritical … LaneLow
	Stream   uint32 // the caller's number for the record's stream
	Device   uint32 // the caller's number for an event's device
	Event    bool   // a device event (the only records downsampled)
	Ledger   bool   // a loss-ledger record: never removed unsynced
	Received int64  // an event's received time, Unix ms
	Bytes    int64  // stored size
}

// Scan calls yield for the records in the range the caller chose, in offset
// order, until yield returns false. The choices may scan twice.
type Scan func(yield func(Item) bool) error

// Sinks are the sync positions: for each sink, each lane's cursor (every
// record of the lane below it is confirmed). A lane a sink does not have
// holds math.MaxUint64 (nothing of it waits).
type Sinks [][NumLanes]uint64

// synced reports whether every sink has confirmed it.
func (s Sinks) synced(it Item) bool {
	for _, c := range s {
		if it.Offset >= c[it.Lane] {
			return false
		}
	}
	return len(s) > 0
}

// inFlight follows, for every sink and lane, how many of the lane's records
// from the sink's cursor on a scan has passed: a sink sends a lane's records
// from its cursor in batches of at most protect records, one batch at a time,
// so only the first protect records from the cursor can be on their way (or
// already arrived, unconfirmed). Those are never removed as unsynced: the
// cloud could hold them and the ledger list them.
type inFlight struct {
	sinks   Sinks
	protect int
	seen    [][NumLanes]int
}

func newInFlight(s Sinks, protect int) *inFlight {
	return &inFlight{sinks: s, protect: protect, seen: make([][NumLanes]int, len(s))}
}

// protected reports whether it may be in flight to a sink; call it for every
// record of the scan, in order.
func (f *inFlight) protected(it Item) bool {
	p := false
	for i, c := range f.sinks {
		if it.Offset >= c[it.Lane] {
			f.seen[i][it.Lane]++
			if f.seen[i][it.Lane] <= f.protect {
				p = true
			}
		}
	}
	return p
}

// Choice is a set of records to remove, ascending, with each one's stream
// and lane.
type Choice struct {
	Offsets []uint64
	Streams []uint32
	Lanes   []uint8
}

func (c *Choice) add(it Item) {
	c.Offsets = append(c.Offsets, it.Offset)
	c.Streams = append(c.Streams, it.Stream)
	c.Lanes = append(c.Lanes, uint8(it.Lane))
}

// Synced chooses synced records to evict, the lowest lane first and the
// oldest first within a lane, until need bytes are chosen (need < 0: all).
func Synced(scan Scan, sinks Sinks, need int64) (Choice, error) {
	var perLane [NumLanes]int64
	err := scan(func(it Item) bool {
		if sinks.synced(it) {
			perLane[it.Lane] += it.Bytes
		}
		return true
	})
	if err != nil || len(sinks) == 0 {
		return Choice{}, err
	}
	// Whole lanes from low up, then part of the next one.
	var whole [NumLanes]bool
	partial, budget := -1, int64(0)
	if need < 0 {
		need = math.MaxInt64
	}
	for l := LaneLow; l >= LaneCritical && need > 0; l-- {
		if perLane[l] <= need {
			whole[l], need = true, need-perLane[l]
			continue
		}
		partial, budget = l, need
		break
	}
	var c Choice
	err = scan(func(it Item) bool {
		if !sinks.synced(it) {
			return true
		}
		switch {
		case whole[it.Lane]:
			c.add(it)
		case it.Lane == partial && budget > 0:
			c.add(it)
			budget -= it.Bytes
		}
		return true
	})
	return c, err
}

// Downsample chooses old pending low-lane events to remove so that one in
// every ratio of each stream and device stays: events received before
// `before` (Unix ms). It returns the offset of the first event too young for
// it, where the scan stopped (the caller starts the next downsampling there,
// so nothing is downsampled twice), with young=false if the scan saw none.
func Downsample(scan Scan, sinks Sinks, protect, ratio int, before int64) (c Choice, stop uint64, young bool, err error) {
	type key struct{ stream, device uint32 }
	count := map[key]int{}
	flight := newInFlight(sinks, protect)
	err = scan(func(it Item) bool {
		prot := flight.protected(it)
		if !it.Event {
			return true
		}
		if it.Received >= before {
			stop, young = it.Offset, true
			return false
		}
		if it.Lane != LaneLow || sinks.synced(it) || prot {
			return true
		}
		k := key{it.Stream, it.Device}
		n := count[k]
		count[k] = n + 1
		if n%ratio != 0 {
			c.add(it)
		}
		return true
	})
	return c, stop, young, err
}

// DropOldest chooses the oldest fraction of the pending records to drop:
// records of the other lanes first, oldest first, then critical ones if there
// are not enough. Protected and ledger records count as pending but stay.
func DropOldest(scan Scan, sinks Sinks, protect int, fraction float64) (Choice, error) {
	var pending, nonCritical int
	flight := newInFlight(sinks, protect)
	err := scan(func(it Item) bool {
		prot := flight.protected(it)
		if sinks.synced(it) || len(sinks) == 0 {
			return true
		}
		pending++
		if !prot && !it.Ledger && it.Lane != LaneCritical {
			nonCritical++
		}
		return true
	})
	if err != nil || pending == 0 {
		return Choice{}, err
	}
	want := int(math.Ceil(float64(pending) * fraction))
	critical := max(0, want-nonCritical)
	flight = newInFlight(sinks, protect)
	var c Choice
	err = scan(func(it Item) bool {
		prot := flight.protected(it)
		if prot || it.Ledger || sinks.synced(it) {
			return true
		}
		switch {
		case it.Lane != LaneCritical && want > 0:
			c.add(it)
			want--
		case it.Lane == LaneCritical && critical > 0:
			c.add(it)
			critical--
		}
		return true
	})
	return c, err
}
