package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestFetchRoundTrip(t *testing.T) {
	crc := uint32(0xdeadbeef)
	f := &fetch{term: 7, nodeID: "site-a", member: "b", from: 1 << 40, prev: &crc,
		digests: map[string][digestSize]byte{"lanes": {1}, "checkpoints/x.ckpt": {2}}, report: []byte("r")}
	got, err := decodeFetch(f.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.term != 7 || got.nodeID != "site-a" || got.member != "b" || got.from != 1<<40 ||
		len(got.digests) != 2 || *got.prev != crc || got.digests["lanes"] != [digestSize]byte{1} || string(got.report) != "r" {
		t.Fatalf("%+v", got)
	}
	f.digests, f.report, f.prev = nil, nil, nil
	if got, err = decodeFetch(f.encode()); err != nil || got.digests != nil || got.report != nil || got.prev != nil {
		t.Fatalf("%+v, %v", got, err)
	}
}

func encodeReply(r *reply) []byte {
	b := r.encodeHeader(nil)
	var body []byte
	prev := r.start
	for i, off := range r.offs {
		body = appendRecord(body, prev, off, r.payloads[i])
		prev = off
	}
	b = binary.AppendUvarint(b, uint64(len(r.offs)))
	return append(b, body...)
}

func TestReplyRoundTrip(t *testing.T) {
	r := &reply{term: 3, nodeID: "n", first: 5, next: 20, durable: 19, accepted: true, start: 10, end: 15,
		roots: []string{"checkpoints", "lanes"}, files: []mirrored{{"lanes", []byte("L")}},
		deletes: []string{"checkpoints/old"}, cursors: map[string]uint64{"sync:a:normal": 12, "=v": 9},
		offs: []uint64{10, 12, 14}, payloads: [][]byte{{1}, {1, 2}, {6}}}
	got, err := decodeReply(encodeReply(r))
	if err != nil {
		t.Fatal(err)
	}
	if got.term != 3 || got.nodeID != "n" || got.first != 5 || got.next != 20 || got.durable != 19 || !got.accepted ||
		got.end != 15 || len(got.roots) != 2 || string(got.files[0].data) != "L" || got.deletes[0] != "checkpoints/old" ||
		got.cursors["=v"] != 9 || got.offs[2] != 14 || !bytes.Equal(got.payloads[1], []byte{1, 2}) {
		t.Fatalf("%+v", got)
	}
	r.end = 16
	if _, err := decodeReply(encodeReply(r)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("an end past the last record: %v", err)
	}
	r.end, r.files = 15, []mirrored{{"../etc/passwd", []byte("x")}}
	if _, err := decodeReply(encodeReply(r)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a file outside the data directory: %v", err)
	}
	_, err = decodeReply(encodeError(codeTerm, "term 2, want 3"))
	if !errors.Is(err, ErrTerm) || err.Error() != "primary: term 2, want 3" {
		t.Fatalf("error reply: %v", err)
	}
}

// The decoders take bytes from the other member: any input is an error or
// a message, never a panic.
func FuzzDecodeFetch(f *testing.F) {
	f.Add((&fetch{term: 1, nodeID: "a", from: 3, digests: map[string][digestSize]byte{"lanes": {}}}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, err := decodeFetch(b); err == nil {
			if _, err := decodeFetch(got.encode()); err != nil {
				t.Fatalf("re-encoded fetch: %v", err)
			}
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	f.Add(encodeReply(&reply{start: 4, end: 6, roots: []string{"lanes"}, cursors: map[string]uint64{"c": 1},
		offs: []uint64{4, 5}, payloads: [][]byte{{1}, {2}}}))
	f.Add(encodeError(codeNodeID, "x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeReply(b); err == nil && len(r.offs) > 0 && r.end != r.offs[len(r.offs)-1]+1 {
			t.Fatalf("end %d after record %d", r.end, r.offs[len(r.offs)-1])
		}
	})
}
