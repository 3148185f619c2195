package replica

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
)

// Format constants (docs/format/replication.md).
const (
	fetchMagic   = "HFRQ"
	replyMagic   = "HFRP"
	wireVersion  = 1
	digestSize   = 32 // SHA-256
	flagDigests  = 1  // fetch: digests follow
	flagPrev     = 2  // fetch: prev_crc follows
	flagAccepted = 1  // reply: the report was accepted
)

// fetch is a standby's request.
type fetch struct {
	term    uint64
	nodeID  string
	member  string
	from    uint64
	prev    *uint32                     // CRC-32C of the standby's record at from-1; nil: none sent
	digests map[string][digestSize]byte // nil: the standby sent none
	report  []byte
}

// mirrored is one mirrored file's content.
type mirrored struct {
	name string
	data []byte
}

// reply is the primary's answer to a fetch that it served. Payloads and file
// contents alias the message they were decoded from.
type reply struct {
	term     uint64
	nodeID   string
	first    uint64
	next     uint64
	durable  uint64
	accepted bool
	start    uint64
	end      uint64
	roots    []string
	files    []mirrored
	deletes  []string
	cursors  map[string]uint64
	offs     []uint64
	payloads [][]byte
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func (f *fetch) encode() []byte {
	b := append(make([]byte, 0, 64), fetchMagic...)
	b = append(b, wireVersion)
	b = binary.AppendUvarint(b, f.term)
	b = appendString(b, f.nodeID)
	b = appendString(b, f.member)
	b = binary.AppendUvarint(b, f.from)
	var flags byte
	if f.digests != nil {
		flags |= flagDigests
	}
	if f.prev != nil {
		flags |= flagPrev
	}
	b = append(b, flags)
	if f.prev != nil {
		b = binary.LittleEndian.AppendUint32(b, *f.prev)
	}
	if f.digests != nil {
		b = binary.AppendUvarint(b, uint64(len(f.digests)))
		for _, name := range sortedKeys(f.digests) {
			d := f.digests[name]
			b = appendString(b, name)
			b = append(b, d[:]...)
		}
	}
	return appendBytes(b, f.report)
}

// encodeHeader encodes r up to and including the cursors; the record count
// and the records (appendRecord) follow.
func (r *reply) encodeHeader(b []byte) []byte {
	b = append(b, replyMagic...)
	b = append(b, wireVersion, codeOK)
	b = binary.AppendUvarint(b, r.term)
	b = appendString(b, r.nodeID)
	b = binary.AppendUvarint(b, r.first)
	b = binary.AppendUvarint(b, r.next)
	b = binary.AppendUvarint(b, r.durable)
	var flags byte
	if r.accepted {
		flags |= flagAccepted
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, r.start)
	b = binary.AppendUvarint(b, r.end)
	b = binary.AppendUvarint(b, uint64(len(r.roots)))
	for _, n := range r.roots {
		b = appendString(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(r.files)))
	for _, f := range r.files {
		b = appendString(b, f.name)
		b = appendBytes(b, f.data)
	}
	b = binary.AppendUvarint(b, uint64(len(r.deletes)))
	for _, n := range r.deletes {
		b = appendString(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(r.cursors)))
	for _, name := range sortedKeys(r.cursors) {
		b = appendString(b, name)
		b = binary.AppendUvarint(b, r.cursors[name])
	}
	return b
}

// appendRecord appends one record of the batch body: its offset's delta from
// prev (the reply's start, or the previous record's offset), its length, its
// payload.
func appendRecord(b []byte, prev, off uint64, payload []byte) []byte {
	b = binary.AppendUvarint(b, off-prev)
	return appendBytes(b, payload)
}

func encodeError(code byte, msg string) []byte {
	b := append(make([]byte, 0, 16+len(msg)), replyMagic...)
	b = append(b, wireVersion, code)
	return appendString(b, msg)
}

// decoder reads the fields of a message; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (d *decoder) magic(m string) {
	if len(d.b) < len(m)+1 || string(d.b[:len(m)]) != m {
		d.fail("bad magic")
		return
	}
	if d.b[len(m)] != wireVersion {
		d.fail(fmt.Sprintf("version %d, want %d", d.b[len(m)], wireVersion))
		return
	}
	d.b = d.b[len(m)+1:]
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(what + " runs past the end")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string(what string) string { return string(d.bytes(what)) }

// count reads a count of items each at least min bytes long, refusing one
// the remaining bytes cannot hold.
func (d *decoder) count(what string, min int) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.fail(what + " too large")
		return 0
	}
	return int(n)
}

// name reads a file name and checks it stays inside the data directory.
func (d *decoder) name(what string) string {
	n := d.string(what)
	if d.err == nil && (n == "" || !filepath.IsLocal(filepath.FromSlash(n))) {
		d.fail(fmt.Sprintf("%s %q is not a local path", what, n))
	}
	return n
}

func (d *decoder) end() {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d bytes after the end", len(d.b)))
	}
}

func decodeFetch(b []byte) (*fetch, error) {
	d := &decoder{b: b}
	d.magic(fetchMagic)
	f := &fetch{}
	f.term = d.uvarint("term")
	f.nodeID = d.string("node_id")
	f.member = d.string("member")
	f.from = d.uvarint("from")
	flags := d.byte1("flags")
	if flags&^(flagDigests|flagPrev) != 0 {
		d.fail("unknown flags")
	}
	if flags&flagPrev != 0 {
		if d.err == nil && len(d.b) < 4 {
			d.fail("prev_crc")
		}
		if d.err == nil {
			v := binary.LittleEndian.Uint32(d.b)
			f.prev, d.b = &v, d.b[4:]
		}
	}
	if flags&flagDigests != 0 {
		n := d.count("digest count", 1+digestSize)
		f.digests = make(map[string][digestSize]byte, n)
		for range n {
			name := d.name("digest name")
			if d.err != nil || len(d.b) < digestSize {
				d.fail("digest")
				break
			}
			f.digests[name] = [digestSize]byte(d.b[:digestSize])
			d.b = d.b[digestSize:]
		}
	}
	if r := d.bytes("report"); len(r) > 0 {
		f.report = r
	}
	d.end()
	if d.err != nil {
		return nil, d.err
	}
	return f, nil
}

// decodeReply decodes a reply; an error reply comes back as its error
// (unwrapping to the code's sentinel).
func decodeReply(b []byte) (*reply, error) {
	d := &decoder{b: b}
	d.magic(replyMagic)
	if code := d.byte1("status"); d.err == nil && code != codeOK {
		msg := d.string("message")
		d.end()
		if d.err != nil {
			return nil, d.err
		}
		if _, ok := codeErrs[code]; !ok {
			code = codeSourceError
		}
		return nil, &remoteError{code: code, msg: msg}
	}
	r := &reply{}
	r.term = d.uvarint("term")
	r.nodeID = d.string("node_id")
	r.first = d.uvarint("first")
	r.next = d.uvarint("next")
	r.durable = d.uvarint("durable")
	flags := d.byte1("flags")
	if flags&^flagAccepted != 0 {
		d.fail("unknown flags")
	}
	r.accepted = flags&flagAccepted != 0
	r.start = d.uvarint("start")
	r.end = d.uvarint("end")
	for range d.count("root count", 2) {
		r.roots = append(r.roots, d.name("root"))
	}
	for range d.count("file count", 3) {
		name := d.name("file name")
		r.files = append(r.files, mirrored{name: name, data: d.bytes("file content")})
	}
	for range d.count("delete count", 2) {
		r.deletes = append(r.deletes, d.name("deleted name"))
	}
	n := d.count("cursor count", 3)
	r.cursors = make(map[string]uint64, n)
	for range n {
		name := d.string("cursor name")
		r.cursors[name] = d.uvarint("cursor offset")
	}
	n = d.count("record count", 2)
	r.offs, r.payloads = make([]uint64, 0, n), make([][]byte, 0, n)
	prev := r.start
	for i := range n {
		delta := d.uvarint("offset delta")
		if d.err == nil && i > 0 && delta == 0 {
			d.fail("offsets not ascending")
		}
		off := prev + delta
		if d.err == nil && off < prev {
			d.fail("offset overflow")
		}
		p := d.bytes("payload")
		if d.err == nil && len(p) == 0 {
			d.fail("empty payload")
		}
		if d.err != nil {
			break
		}
		r.offs, r.payloads = append(r.offs, off), append(r.payloads, p)
		prev = off
	}
	d.end()
	if d.err == nil {
		want := r.start
		if n > 0 {
			want = r.offs[n-1] + 1
		}
		if r.end != want {
			d.fail(fmt.Sprintf("end %d, want %d", r.end, want))
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
