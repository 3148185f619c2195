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
// bounded ring: an event overwritten, or appended by someone else than the
// store, is not here (nor, with an engine other than the native log, one
// whose Append has not returned yet), and the processor decodes its record as
// before. What is here for an offset is
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

// assignedAppender is an engine that tells an appender its offsets before
// the records are durable (buffer.Log).
type assignedAppender interface {
	AppendAssigned(assigned func(first uint64), payloads ...[]byte) (uint64, error)
}

// appendFed appends payloads, the records of evs[keep[i]], and puts the
// events in f: before they are durable if the engine says their offsets
// then, so that a reader never finds their records before their events are
// in f; otherwise once the append returns.
func (s *Store) appendFed(f *Fed, payloads [][]byte, evs []event.Event, keep []int) (uint64, error) {
	if a, ok := s.log.(assignedAppender); ok {
		return a.AppendAssigned(func(first uint64) { f.put(first, evs, keep) }, payloads...)
	}
	first, err := s.log.Append(payloads...)
	if err == nil {
		f.put(first, evs, keep)
	}
	return first, err
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
