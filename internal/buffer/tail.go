package buffer

import "sync"

// DefaultTailBytes is how many of the newest committed bytes the log keeps in
// memory for its readers by default (Options.TailBytes).
const DefaultTailBytes = 4 << 20

// tail keeps the newest committed bytes of the active segment in memory, as
// they are in the file: the frames of the last commit groups, after their
// fsync. A reader at the live end of the log (the processor, the alert
// notifiers, the sinks) fills its read buffer from here instead of reading
// the file back, and skips the frames' checksums, which were computed from
// these same bytes when they were written. Readers further behind, or on
// another segment, read the file as before: the tail is a copy of the end of
// the file, never the only copy of a record, so what a reader returns does not
// depend on whether it found the bytes here.
type tail struct {
	mu sync.RWMutex
	// seg and gen are the segment, and its generation, that data belongs
	// to; data holds its bytes from position start.
	seg   *segment
	gen   uint64
	start int64
	data  []byte
}

// add records that the bytes b were written, and fsync'd, at position pos of
// seg (generation gen), keeping at most limit bytes. A segment other than the
// one held replaces it. Only the log's writer goroutine calls it.
func (t *tail) add(seg *segment, gen uint64, pos int64, b []byte, limit int) {
	if limit <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seg != seg || t.gen != gen || pos != t.start+int64(len(t.data)) {
		t.seg, t.gen, t.start, t.data = seg, gen, pos, t.data[:0]
	}
	if len(b) > limit {
		// Only the end of a group larger than the whole tail.
		t.start, t.data = pos+int64(len(b)-limit), append(t.data[:0], b[len(b)-limit:]...)
		return
	}
	if over := len(t.data) + len(b) - limit; over > 0 {
		// Drop the oldest bytes: at least half the tail, so that the
		// bytes moved average out to one move per byte added.
		drop := max(over, len(t.data)/2)
		n := copy(t.data, t.data[drop:])
		t.data, t.start = t.data[:n], t.start+int64(drop)
	}
	if need := len(t.data) + len(b); need > cap(t.data) {
		// Grown as it fills, never beyond limit.
		grown := make([]byte, len(t.data), min(limit, max(2*need, 64<<10)))
		copy(grown, t.data)
		t.data = grown
	}
	t.data = append(t.data, b...)
}

// read copies the bytes of seg (generation gen) from position pos into dst,
// as many as the tail holds up to len(dst), and returns how many; 0 if it
// holds none of them.
func (t *tail) read(seg *segment, gen uint64, pos int64, dst []byte) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.seg != seg || t.gen != gen || pos < t.start || pos >= t.start+int64(len(t.data)) {
		return 0
	}
	return copy(dst, t.data[pos-t.start:])
}
