package degrade

import (
	"sync"
	"sync/atomic"

	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// Gate decides, at ingest, what the degradation level lets in (the matrix's
// raw ingestion row):
//
//	normal, degraded       every event
//	limited                critical streams; every other stream sampled at 50 %
//	minimal, emergency     critical streams only; the others refused
//
// Emergency's "alerts only" has no other meaning at ingest: devices send
// events, not alerts, so it takes critical streams as minimal does. It
// answers with the pressure gate's reasons (pressure.Sampled,
// pressure.Refused), which the loss ledger and the transports know.
type Gate struct {
	level    atomic.Int32
	priority func(stream string) string

	mu   sync.Mutex
	seen map[string]uint64 // per stream, events sampled so far at this level
}

// NewGate returns a gate that looks up a stream's priority with priority.
func NewGate(priority func(stream string) string) *Gate {
	return &Gate{priority: priority, seen: map[string]uint64{}}
}

// SetLevel sets the level the gate applies.
func (g *Gate) SetLevel(l Level) {
	if Level(g.level.Swap(int32(l))) != l {
		g.mu.Lock()
		clear(g.seen)
		g.mu.Unlock()
	}
}

// Admit says whether an event of stream may be stored: pressure.Admitted,
// or why not.
func (g *Gate) Admit(stream string) string {
	l := Level(g.level.Load())
	if l < Limited || g.priority(stream) == "critical" {
		return pressure.Admitted
	}
	if l >= Minimal {
		return pressure.Refused
	}
	g.mu.Lock()
	n := g.seen[stream]
	g.seen[stream] = n + 1
	g.mu.Unlock()
	if n%2 == 1 {
		return pressure.Sampled
	}
	return pressure.Admitted
}
