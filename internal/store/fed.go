package store

import (
	"sync"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// fedSlots is how many of the newest appended events a Fed holds.
const fedSlots = 1 << 16

// Fed holds the newest events the store appended, as ingest gave them, by
// offset: the fields the stream processor needs, so that at the live end it
// takes an event from here instead of decoding its record again. It is a
// bounded ring: an event overwritten, not yet put (the Append that stored it
// has not returned), or appended by someone else than the store is not here,
// and the processor decodes its record as before. What is here for an offset is
// what decoding that offset's record gives.
type Fed struct {
	mu   sync.Mutex
	ring []FedEvent // guarded by mu; slot off mod len
}

// FedEvent is an appended event's fields the processor needs.
type FedEvent struct {
	Next   uint64 // the event's offset + 1; 0: an empty slot
	Stream string
	Device string
	TS     int64
	Value  float64
}

// Fed returns the store's Fed, starting it on the first call: events appended
// before are not in it.
func (s *Store) Fed() *Fed {
	s.fedOnce.Do(func() { s.fed.Store(&Fed{ring: make([]FedEvent, fedSlots)}) })
	return s.fed.Load()
}

// put records evs[keep[i]], stored at offset first+i.
func (f *Fed) put(first uint64, evs []event.Event, keep []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, j := range keep {
		e := &evs[j]
		off := first + uint64(i)
		slot := &f.ring[off%uint64(len(f.ring))]
		if e.Value-e.Value != 0 {
			*slot = FedEvent{} // not finite: its record does not decode to an event
			continue
		}
		*slot = FedEvent{Next: off + 1, Stream: e.Stream, Device: e.DeviceID, TS: e.TS, Value: e.Value}
	}
}

// Copy copies the slots of offsets from, from+1, … into dst, as many as dst
// holds; a slot whose Next is not its offset + 1 holds no event of that offset.
func (f *Fed) Copy(from uint64, dst []FedEvent) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := uint64(len(f.ring))
	for i := range dst {
		dst[i] = f.ring[(from+uint64(i))%n]
	}
}
