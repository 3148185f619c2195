package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// The store's index file (docs/format/store-index.md): the index, the late
// marks and the de-duplication set as of a log offset, so that Open reads
// only the log after it.
const (
	snapshotMagic   = "HFSX"
	snapshotVersion = 1
	// snapshotEvery is how many records may be appended after the last index
	// file before the next is written while running.
	snapshotEvery = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshot is a decoded index file.
type snapshot struct {
	next     uint64 // S
	lastCRC  uint32 // of record S-1's payload
	received int64  // the highest received time below S
	seeds    [2]sipKey
	keys     []orderEntry // the de-duplication set, oldest first
	late     []uint64
	maps     [3]map[string][]run // devices, streams, windows
}

// WriteSnapshot writes the store's index file, if the store has one
// (Options.SnapshotPath). Appends go on meanwhile, but wait to index their
// events while it encodes.
func (s *Store) WriteSnapshot() error {
	if s.opts.SnapshotPath == "" {
		return nil
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	// No append in flight: every record below the durable offset that
	// the store wrote is indexed.
	s.appendMu.Lock()
	next := s.log.DurableOffset()
	s.idx.mu.RLock()
	s.appendMu.Unlock()
	sn := snapshot{next: next, received: s.lastReceived.Load()}
	s.lateMu.RLock()
	for o := range s.late {
		sn.late = append(sn.late, o)
	}
	s.lateMu.RUnlock()
	b := sn.appendHead(nil)
	b = s.dedup.appendStored(b)
	b = appendOffsets(b, sn.late)
	maps := []map[string][]run{s.idx.byDevice, s.idx.byStream, s.idx.byWindow}
	size := 0
	for _, m := range maps {
		size += 4
		for k, runs := range m {
			size += 6 + len(k) + 32*len(runs)
		}
	}
	b = slices.Grow(b, size+4)
	for _, m := range maps {
		b = appendRuns(b, m)
	}
	s.idx.mu.RUnlock()
	if next > 0 {
		crc, err := s.payloadCRC(next - 1)
		if err != nil {
			return fmt.Errorf("store index file: %w", err)
		}
		binary.LittleEndian.PutUint32(b[16:], crc)
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := vfs.WriteAtomic(vfs.OS, s.opts.SnapshotPath, b); err != nil {
		// A disk too full for it must not keep what was written of it:
		// the log needs the space more (the previous file, if any, stays
		// valid, Open reads the log after it).
		os.Remove(s.opts.SnapshotPath + ".tmp")
		return fmt.Errorf("write store index file %s: %w", s.opts.SnapshotPath, err)
	}
	s.snapNext.Store(next)
	return nil
}

// payloadCRC returns the CRC-32C of the payload of the record at off.
func (s *Store) payloadCRC(off uint64) (uint32, error) {
	r := s.log.NewReader(off)
	defer r.Close()
	got, p, err := r.Next()
	if errors.Is(err, io.EOF) || (err == nil && got != off) {
		return 0, fmt.Errorf("record %d is not in the log", off)
	}
	if err != nil {
		return 0, err
	}
	return crc32.Checksum(p, castagnoli), nil
}

func (sn *snapshot) appendHead(b []byte) []byte {
	b = append(b, snapshotMagic...)
	b = binary.LittleEndian.AppendUint16(b, snapshotVersion)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint64(b, sn.next)
	b = binary.LittleEndian.AppendUint32(b, sn.lastCRC) // at 16
	return binary.LittleEndian.AppendUint64(b, uint64(sn.received))
}

func appendOffsets(b []byte, offs []uint64) []byte {
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	b = binary.LittleEndian.AppendUint32(b, uint32(len(offs)))
	for _, o := range offs {
		b = binary.LittleEndian.AppendUint64(b, o)
	}
	return b
}

func appendRuns(b []byte, m map[string][]run) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m)))
	for k, runs := range m {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(runs)))
		for _, r := range runs {
			b = binary.LittleEndian.AppendUint64(b, r.first)
			b = binary.LittleEndian.AppendUint64(b, r.last)
			b = binary.LittleEndian.AppendUint64(b, uint64(r.minTS))
			b = binary.LittleEndian.AppendUint64(b, uint64(r.maxTS))
		}
	}
	return b
}

// readSnapshot reads and checks the index file at path.
func readSnapshot(path string) (*snapshot, error) {
	b, err := vfs.ReadFile(vfs.OS, path)
	if err != nil {
		return nil, err
	}
	if len(b) < 4 || crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, errors.New("checksum mismatch")
	}
	d := decoder{b: b[:len(b)-4]}
	if string(d.bytes(4)) != snapshotMagic {
		return nil, errors.New("bad magic")
	}
	if v := d.u16(); v != snapshotVersion {
		return nil, fmt.Errorf("unsupported version %d", v)
	}
	d.u16()
	sn := &snapshot{next: d.u64(), lastCRC: d.u32(), received: int64(d.u64())}
	for i := range sn.seeds {
		sn.seeds[i] = sipKey{k0: d.u64(), k1: d.u64()}
	}
	n := d.count(24)
	sn.keys = make([]orderEntry, n)
	for i := range sn.keys {
		sn.keys[i] = orderEntry{key: dedupKey{d.u64(), d.u64()}, received: int64(d.u64())}
	}
	n = d.count(8)
	sn.late = make([]uint64, n)
	for i := range sn.late {
		sn.late[i] = d.u64()
	}
	for i := range sn.maps {
		n := d.count(6)
		m := make(map[string][]run, n)
		for range n {
			k := string(d.bytes(int(d.u16())))
			runs := make([]run, d.count(32))
			for j := range runs {
				runs[j] = run{first: d.u64(), last: d.u64(), minTS: int64(d.u64()), maxTS: int64(d.u64())}
			}
			m[k] = runs
		}
		sn.maps[i] = m
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last map", len(d.b))
	}
	return sn, nil
}

// decoder reads little-endian fields; past the end it records an error and
// returns zeros.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n > len(d.b) {
		if d.err == nil {
			d.err = errors.New("truncated")
		}
		return make([]byte, n)
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u16() uint16 { return binary.LittleEndian.Uint16(d.bytes(2)) }
func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.bytes(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.bytes(8)) }

// count reads a u32 count of items of at least size bytes each, and checks
// that that many can follow.
func (d *decoder) count(size int) int {
	n := d.u32()
	if d.err == nil && uint64(n)*uint64(size) > uint64(len(d.b)) {
		d.err = fmt.Errorf("count %d does not fit in %d bytes", n, len(d.b))
	}
	if d.err != nil {
		return 0
	}
	return int(n)
}

// loadSnapshot installs the index file's content if it matches the log: the
// index, and the de-duplication keys received since since. It returns the
// offset to read the log from, the file's S. ok is false (and why says why)
// when the file is missing or does not match: the whole log is read.
func (s *Store) loadSnapshot(since int64) (from uint64, ok bool, why error) {
	sn, err := readSnapshot(s.opts.SnapshotPath)
	if err != nil {
		return 0, false, err
	}
	if durable := s.log.DurableOffset(); sn.next > durable {
		return 0, false, fmt.Errorf("it covers the log up to offset %d, the log ends at %d", sn.next, durable)
	}
	first := s.log.FirstOffset()
	if sn.next <= first {
		return 0, false, fmt.Errorf("it covers the log up to offset %d, the log starts at %d", sn.next, first)
	}
	crc, err := s.payloadCRC(sn.next - 1)
	if err != nil {
		return 0, false, err
	}
	if crc != sn.lastCRC {
		return 0, false, fmt.Errorf("record %d is not the one it was written after", sn.next-1)
	}
	s.idx.mu.Lock()
	s.idx.byDevice, s.idx.byStream, s.idx.byWindow = sn.maps[0], sn.maps[1], sn.maps[2]
	s.idx.mu.Unlock()
	room := min(uint64(len(sn.keys))+s.log.DurableOffset()-sn.next, uint64(s.opts.DedupMaxEntries))
	s.dedup.load(sn.seeds, sn.keys, since, int(room))
	s.lateMu.Lock()
	for _, o := range sn.late {
		s.late[o] = struct{}{}
	}
	s.lateMu.Unlock()
	s.restoreReceived(sn.received)
	s.first.Store(first)
	s.forget(first)
	s.snapNext.Store(sn.next)
	return sn.next, true, nil
}

// stored returns the keys of the set whose writes are done, oldest first.
func (d *dedup) stored() []orderEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]orderEntry, 0, d.live)
	for p := d.head; p < d.tail; p++ {
		e := d.ring[p&uint64(len(d.ring)-1)]
		if e.received != gone && d.claims[e.claim] == nil {
			out = append(out, orderEntry{key: e.key, received: e.received})
		}
	}
	return out
}

// appendStored appends what appendKeys would of the set's seeds and
// stored(), encoding the keys straight from the ring into room made for all
// of them at once: a full set is 24 MB, which growing by appends would copy
// several times over.
func (d *dedup) appendStored(b []byte) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range d.seeds {
		b = binary.LittleEndian.AppendUint64(b, k.k0)
		b = binary.LittleEndian.AppendUint64(b, k.k1)
	}
	at := len(b)
	b = binary.LittleEndian.AppendUint32(b, 0) // the count, once known
	b = slices.Grow(b, 24*d.live)
	n := 0
	for p := d.head; p < d.tail; p++ {
		e := &d.ring[p&uint64(len(d.ring)-1)]
		if e.received == gone || d.claims[e.claim] != nil {
			continue
		}
		o := len(b)
		b = b[:o+24]
		binary.LittleEndian.PutUint64(b[o:], e.key[0])
		binary.LittleEndian.PutUint64(b[o+8:], e.key[1])
		binary.LittleEndian.PutUint64(b[o+16:], uint64(e.received))
		n++
	}
	binary.LittleEndian.PutUint32(b[at:], uint32(n))
	return b
}

// load makes an empty set the one an index file holds: its hash keys, and
// its keys received since since, with room for more up to room keys. The
// keys being oldest first, the result is that of inserting them in turn.
func (d *dedup) load(seeds [2]sipKey, keys []orderEntry, since int64, room int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seeds = seeds
	d.head, d.tail, d.live = 0, 0, 0
	d.resize(ringFor(max(len(keys), room)))
	for _, o := range keys {
		if o.received < since {
			continue
		}
		if d.tail-d.head == uint64(len(d.ring)) {
			d.resize(2 * len(d.ring))
		}
		at := d.tail & uint64(len(d.ring)-1)
		d.ring[at] = dedupEntry{key: o.key, received: o.received}
		d.tail++
		d.live++
		d.replace(o.key, at) // a file holds each key once; should it not, the later wins
	}
	d.pruneLocked(since) // beyond max: the oldest go, as when inserted
}

// keys returns every key in the set with its received time.
func (d *dedup) keys() map[dedupKey]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[dedupKey]int64, d.live)
	for p := d.head; p < d.tail; p++ {
		if e := d.ring[p&uint64(len(d.ring)-1)]; e.received != gone {
			m[e.key] = e.received
		}
	}
	return m
}

// isNotExist reports a missing index file.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
