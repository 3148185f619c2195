package alert

import "sync"

// boardResolved bounds how many resolved alerts a Board keeps.
const boardResolved = 100

// Board holds the alerts a node raises about itself rather than from rules
// over events (a sink offline, the buffer's pressure), so that GET
// /v1/alerts lists them beside the processor's: every firing one, and the
// newest resolved. It is safe for concurrent use.
type Board struct {
	mu sync.Mutex
	// Lock mu for the fields below.
	firing   map[string]Alert // by ID
	order    []string         // firing IDs, oldest first
	resolved []Alert          // newest last, at most boardResolved
}

// NewBoard returns an empty board.
func NewBoard() *Board { return &Board{firing: map[string]Alert{}} }

// Record files a: a firing alert is listed until a resolved one with its ID
// is recorded.
func (b *Board) Record(a Alert) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.State == Firing {
		if _, ok := b.firing[a.ID]; !ok {
			b.order = append(b.order, a.ID)
		}
		b.firing[a.ID] = a
		return
	}
	if _, ok := b.firing[a.ID]; ok {
		delete(b.firing, a.ID)
		for i, id := range b.order {
			if id == a.ID {
				b.order = append(b.order[:i:i], b.order[i+1:]...)
				break
			}
		}
	}
	b.resolved = append(b.resolved, a)
	if len(b.resolved) > boardResolved {
		b.resolved = b.resolved[len(b.resolved)-boardResolved:]
	}
}

// List returns the alerts in state and of severity ("" for any), newest
// first: the firing ones, then the resolved.
func (b *Board) List(state, severity string) []Alert {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Alert
	keep := func(a Alert) {
		if (state == "" || string(a.State) == state) && (severity == "" || string(a.Severity) == severity) {
			out = append(out, a)
		}
	}
	for i := len(b.order) - 1; i >= 0; i-- {
		keep(b.firing[b.order[i]])
	}
	for i := len(b.resolved) - 1; i >= 0; i-- {
		keep(b.resolved[i])
	}
	return out
}
