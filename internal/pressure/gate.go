package pressure

import (
	"sync"
	"sync/atomic"
)

// Gate decides, at ingest, what the current level lets in (DESIGN §7):
//
//	normal, warning   every event
//	critical          critical streams; every other stream sampled at 50 %
//	emergency, full   critical streams; low-priority streams refused;
//	                  the others sampled at 50 %
//
// Sampling keeps every other event of a stream, so a stream's kept events are
// spread evenly, not bunched. Critical streams are never touched.
type Gate struct {
	level    atomic.Int32
	priority func(stream string) string // critical, high, normal or low

	mu   sync.Mutex
	seen map[string]uint64 // per stream, events sampled so far at this level
}

// Reasons Admit gives for events it keeps out (loss-ledger reasons).
const (
	Admitted = ""
	Sampled  = "sampled"
	Refused  = "refused"
)

// NewGate returns a gate that looks up a stream's priority with priority.
func NewGate(priority func(stream string) string) *Gate {
	return &Gate{priority: priority, seen: map[string]uint64{}}
}

// SetLevel sets the level the gate applies.
func (g *Gate) SetLevel(l Level) {
	if Level(g.level.Swap(int32(l))) != l {
		g.mu.Lock()
		clear(g.seen) // sampling starts afresh at each level
		g.mu.Unlock()
	}
}

// Level returns the level the gate applies.
func (g *Gate) Level() Level { return Level(g.level.Load()) }

// Admit says whether an event of stream may be stored: Admitted, or why not.
func (g *Gate) Admit(stream string) string {
	l := g.Level()
	if l < Critical {
		return Admitted
	}
	p := g.priority(stream)
	switch {
	case p == "critical":
		return Admitted
	case l >= Emergency && p == "low":
		return Refused
	}
	g.mu.Lock()
	n := g.seen[stream]
	g.seen[stream] = n + 1
	g.mu.Unlock()
	if n%2 == 1 {
		return Sampled
	}
	return Admitted
}
