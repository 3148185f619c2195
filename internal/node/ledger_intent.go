package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// The ledger-intent file (docs/format/ledger.md): the evicted_unsynced ledger
// records retention's hook made, made durable before the deletion they
// account for, until they are in the buffer.

const (
	intentFile    = "ledger-intent"
	intentMagic   = "HFLI"
	intentVersion = 1
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	// errIntentCorrupt is returned for a ledger-intent file that does not parse.
	errIntentCorrupt = errors.New("node: ledger-intent file corrupt")
)

// intentEntry is one ledger record of the intent file: after is the end of
// the deletion it accounts for (the record, once appended, lies at or above
// it).
type intentEntry struct {
	seq   uint64 // in this process only: matches the queued record
	after uint64
	rec   event.LedgerRecord
}

func encodeIntent(entries []intentEntry) []byte {
	b := append([]byte(intentMagic), 0, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint16(b[4:], intentVersion)
	binary.LittleEndian.PutUint32(b[6:], uint32(len(entries)))
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint64(b, e.after)
		p := e.rec.AppendBinary(nil)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeIntent(b []byte) ([]intentEntry, error) {
	if len(b) < 14 || string(b[:4]) != intentMagic {
		return nil, fmt.Errorf("%w: no header", errIntentCorrupt)
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errIntentCorrupt)
	}
	if v := binary.LittleEndian.Uint16(b[4:]); v != intentVersion {
		return nil, fmt.Errorf("%w: version %d", errIntentCorrupt, v)
	}
	n := binary.LittleEndian.Uint32(b[6:])
	rest := body[10:]
	var out []intentEntry
	for range n {
		if len(rest) < 12 {
			return nil, fmt.Errorf("%w: truncated entry", errIntentCorrupt)
		}
		after, size := binary.LittleEndian.Uint64(rest), binary.LittleEndian.Uint32(rest[8:])
		rest = rest[12:]
		if uint64(len(rest)) < uint64(size) {
			return nil, fmt.Errorf("%w: truncated record", errIntentCorrupt)
		}
		rec, err := event.DecodeLedger(rest[:size])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errIntentCorrupt, err)
		}
		out = append(out, intentEntry{after: after, rec: rec})
		rest = rest[size:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the entries", errIntentCorrupt, len(rest))
	}
	return out, nil
}

// loadIntent reads the intent file a previous run left, if any, as the
// entries recoverIntent resolves once the buffer is open. A file that does
// not parse is set aside (.bad) and logged.
func (g *lossLedger) loadIntent() {
	if g.intentPath == "" {
		return
	}
	b, err := os.ReadFile(g.intentPath)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		var entries []intentEntry
		if entries, err = decodeIntent(b); err == nil {
			g.fileExists = true
			for _, e := range entries {
				g.seq++
				e.seq = g.seq
				g.recovered = append(g.recovered, e)
			}
			g.log.Warn("loss ledger: records lost to retention before the last stop, not yet in the buffer", "entries", len(entries))
			return
		}
	}
	g.log.Error("loss ledger: cannot read the ledger-intent file; set aside as .bad", "file", g.intentPath, "err", err)
	if rerr := os.Rename(g.intentPath, g.intentPath+".bad"); rerr != nil {
		g.log.Error("loss ledger: cannot set the ledger-intent file aside", "err", rerr)
	}
}

// writeIntentLocked makes the intent file hold exactly the entries not yet in
// the buffer (recovered ones first), removing it when there are none.
// fileMu must be held, not mu.
func (g *lossLedger) writeIntentLocked(entries []intentEntry) error {
	if g.intentPath == "" {
		return nil
	}
	if len(entries) == 0 {
		if !g.fileExists {
			return nil
		}
		if err := os.Remove(g.intentPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		g.fileExists = false
		return vfs.OS.SyncDir(filepath.Dir(g.intentPath))
	}
	if err := vfs.WriteAtomic(vfs.OS, g.intentPath, encodeIntent(entries)); err != nil {
		return err
	}
	g.fileExists = true
	return nil
}

// intentSnapshotLocked is what the intent file must hold. mu must be held.
func (g *lossLedger) intentSnapshotLocked() []intentEntry {
	out := make([]intentEntry, 0, len(g.recovered)+len(g.intent))
	out = append(out, g.recovered...)
	return append(out, g.intent...)
}

// recoverIntent resolves, before anything syncs, the entries a previous run
// left in the intent file: those already in the buffer are dropped, the
// others lose the offsets the buffer still holds (their deletion never became
// durable: they will sync) and are appended. The file then goes. On error
// the file stays for the next start.
// Not under fileMu: the append may run retention, whose hook takes it.
func (g *lossLedger) recoverIntent(buf buffer.Engine) error {
	g.mu.Lock()
	rec := slices.Clone(g.recovered)
	g.mu.Unlock()
	if len(rec) == 0 {
		return nil
	}
	after := rec[0].after
	for _, e := range rec {
		after = min(after, e.after)
	}
	present, err := retentionRecords(buf, after)
	if err != nil {
		return fmt.Errorf("read the buffer's ledger records: %w", err)
	}
	first := buf.FirstOffset()
	var out []event.LedgerRecord
	var payloads [][]byte
	for _, e := range rec {
		l := e.rec
		// What a ledger record in the buffer lists was appended before
		// the stop: as it is (flush), or without what was still held
		// (an earlier recoverIntent). An offset is deleted only once.
		for _, p := range present {
			if p.Stream != l.Stream {
				continue
			}
			for _, r := range p.Ranges {
				l = withoutOffsets(l, r.First, r.First+r.Len)
			}
		}
		l = withoutOffsets(l, first, ^uint64(0))
		if l.Count == 0 {
			continue // nothing of it was deleted
		}
		out = append(out, l)
		payloads = append(payloads, l.AppendBinary(nil))
	}
	if len(payloads) > 0 {
		if _, err := buf.Append(payloads...); err != nil {
			return fmt.Errorf("append the ledger records: %w", err)
		}
	}
	g.fileMu.Lock()
	defer g.fileMu.Unlock()
	g.mu.Lock()
	for i := range out {
		g.count(&out[i])
	}
	g.recovered = nil
	snap := g.intentSnapshotLocked()
	g.mu.Unlock()
	for _, l := range out {
		g.log.Warn("records lost to retention before the last stop, accounted for in the ledger", "reason", event.LossName(l.Reason),
			"stream", l.Stream, "records", l.Count, "ranges", len(l.Ranges))
	}
	return g.writeIntentLocked(snap)
}

// retentionRecords returns retention's ledger records (evicted_unsynced) in
// buf from off on.
func retentionRecords(buf buffer.Engine, off uint64) ([]event.LedgerRecord, error) {
	var out []event.LedgerRecord
	r := buf.NewReader(off)
	defer r.Close()
	for {
		_, p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if event.Type(p) != event.TypeLedger {
			continue
		}
		if l, err := event.DecodeLedger(p); err == nil && l.Reason == event.LossEvictedUnsynced {
			out = append(out, l)
		}
	}
}

// withoutOffsets returns l without the offsets in [lo, hi), its count the
// offsets left.
func withoutOffsets(l event.LedgerRecord, lo, hi uint64) event.LedgerRecord {
	var rs []event.OffsetRange
	l.Count = 0
	for _, r := range l.Ranges {
		end := r.First + r.Len
		if r.First < lo {
			rs = append(rs, event.OffsetRange{First: r.First, Len: min(end, lo) - r.First})
		}
		if end > hi {
			f := max(r.First, hi)
			rs = append(rs, event.OffsetRange{First: f, Len: end - f})
		}
	}
	for _, r := range rs {
		l.Count += r.Len
	}
	l.Ranges = rs
	return l
}
