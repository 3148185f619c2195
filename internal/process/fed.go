package process

import "github.com/holdfast-edge/holdfast/internal/store"

// fedView is the reader's window on the store's Fed (store.Fed): the slots of
// fedWindow offsets from base, copied at once, so that the reader takes the
// Fed's lock once for many events rather than once an event.
type fedView struct {
	f    *store.Fed
	base uint64
	win  []store.FedEvent
	// missed: the window was copied from a miss at base; it is copied again
	// only once the reader has passed it, so that a reader behind the Fed
	// (replaying, or fallen behind) copies once per window, not once an
	// event.
	missed bool
	hits   uint64 // events taken from the Fed
}

const fedWindow = 256

func newFedView(f *store.Fed) *fedView {
	v := &fedView{f: f}
	if f != nil {
		v.win = make([]store.FedEvent, fedWindow)
		v.base = ^uint64(0) - fedWindow // no offset in the window
	}
	return v
}

// get returns the event the store appended at off, if the Fed still holds
// it; otherwise the reader decodes the record.
func (v *fedView) get(off uint64) (store.FedEvent, bool) {
	if v.f == nil {
		return store.FedEvent{}, false
	}
	if off >= v.base && off-v.base < uint64(len(v.win)) {
		if e := v.win[off-v.base]; e.Next == off+1 {
			v.hits++
			return e, true
		}
		if v.missed {
			return store.FedEvent{}, false
		}
	}
	// Not in the window, or not yet put when it was copied: copy it again
	// from off.
	v.f.Copy(off, v.win)
	v.base = off
	e := v.win[0]
	v.missed = e.Next != off+1
	if !v.missed {
		v.hits++
	}
	return e, !v.missed
}
