package cloud

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
)

// Message headers besides Nats-Msg-Id (docs/format/cloud.md, "Messages").
const (
	HeaderFirst    = "Holdfast-First"
	HeaderLast     = "Holdfast-Last"
	HeaderCount    = "Holdfast-Count"
	HeaderLane     = "Holdfast-Lane"
	HeaderEncoding = "Holdfast-Encoding"
)

// MaxBatchBody is the most record bytes (offsets and lengths included) a
// batch body holds before compression, unless one record alone is larger.
const MaxBatchBody = 512 << 10

// maxDecodedBody bounds what DecodeBatch inflates: a batch of one record of
// the largest size the log takes, with room to spare.
const maxDecodedBody = 64 << 20

// BatchRecord is one record in a batch.
type BatchRecord struct {
	Offset  uint64
	Payload []byte // the log record as stored, type byte first
}

// Batch is an encoded batch body with what its headers say.
type Batch struct {
	First, Last uint64
	Count       int
	Body        []byte
}

// Append adds one record to a batch body under construction; records must
// come in strictly ascending offset order.
func (b *Batch) Append(off uint64, payload []byte) {
	if b.Count == 0 {
		b.First, b.Last = off, off
	}
	b.Body = binary.AppendUvarint(b.Body, off-b.Last)
	b.Body = binary.AppendUvarint(b.Body, uint64(len(payload)))
	b.Body = append(b.Body, payload...)
	b.Last = off
	b.Count++
}

// Reset empties b, keeping its buffer.
func (b *Batch) Reset() { *b = Batch{Body: b.Body[:0]} }

// Compression is how hard a batch body is compressed.
type Compression int

const (
	// NoCompression sends the body as it is.
	NoCompression Compression = iota
	// FastCompression is zstd at its fastest level: the default.
	FastCompression
	// HardCompression is zstd at its best-compression level, for a node
	// whose buffer fills (the warning level's "compress harder"): fewer bytes
	// on a slow uplink for more CPU. (On holdfast's event records the
	// intermediate levels come out no smaller than the fastest; see
	// BenchmarkBatchCompression.)
	HardCompression
)

var (
	encOnce [3]sync.Once
	enc     [3]*zstd.Encoder
	decOnce sync.Once
	dec     *zstd.Decoder
)

func encoder(c Compression) *zstd.Encoder {
	level := zstd.SpeedFastest
	if c == HardCompression {
		level = zstd.SpeedBestCompression
	}
	encOnce[c].Do(func() {
		enc[c], _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1))
	})
	return enc[c]
}

func decoder() *zstd.Decoder {
	decOnce.Do(func() {
		dec, _ = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxDecodedBody), zstd.WithDecoderConcurrency(1))
	})
	return dec
}

// BatchMsg builds the message carrying b for a node's records of one kind,
// stream and lane, its body compressed with zstd (fastest level) when
// compress is set.
func BatchMsg(nodeID, kind, stream, lane string, b *Batch, compress bool) *nats.Msg {
	c := NoCompression
	if compress {
		c = FastCompression
	}
	return BatchMsgCompressed(nodeID, kind, stream, lane, b, c)
}

// BatchMsgCompressed is BatchMsg with a choice of compression.
func BatchMsgCompressed(nodeID, kind, stream, lane string, b *Batch, c Compression) *nats.Msg {
	m := nats.NewMsg(Subject(nodeID, kind, stream))
	first, last := strconv.FormatUint(b.First, 10), strconv.FormatUint(b.Last, 10)
	m.Header.Set(nats.MsgIdHdr, nodeID+":"+first+"-"+last)
	m.Header.Set(HeaderFirst, first)
	m.Header.Set(HeaderLast, last)
	m.Header.Set(HeaderCount, strconv.Itoa(b.Count))
	m.Header.Set(HeaderLane, lane)
	if c != NoCompression {
		m.Header.Set(HeaderEncoding, "zstd")
		m.Data = encoder(c).EncodeAll(b.Body, make([]byte, 0, len(b.Body)/3))
	} else {
		m.Data = append([]byte(nil), b.Body...)
	}
	return m
}

// DecodeBatch returns the records a batch message holds, checking the body
// against its headers: every field docs/format/cloud.md requires, in range.
// The payloads alias the decoded body, not data.
func DecodeBatch(h nats.Header, data []byte) ([]BatchRecord, error) {
	first, err := headerUint(h, HeaderFirst)
	if err != nil {
		return nil, err
	}
	last, err := headerUint(h, HeaderLast)
	if err != nil {
		return nil, err
	}
	count, err := headerUint(h, HeaderCount)
	if err != nil {
		return nil, err
	}
	if count == 0 || last < first || count-1 > last-first {
		return nil, fmt.Errorf("cloud: batch headers first %d last %d count %d are inconsistent", first, last, count)
	}
	body := data
	switch e := h.Get(HeaderEncoding); e {
	case "":
	case "zstd":
		body, err = decoder().DecodeAll(data, nil)
		if err != nil {
			return nil, fmt.Errorf("cloud: batch %d-%d: zstd: %w", first, last, err)
		}
	default:
		return nil, fmt.Errorf("cloud: batch %d-%d: unknown %s %q", first, last, HeaderEncoding, e)
	}
	recs := make([]BatchRecord, 0, min(count, uint64(len(body)/3+1)))
	off := first
	for i := uint64(0); len(body) > 0; i++ {
		delta, n := binary.Uvarint(body)
		if n <= 0 {
			return nil, fmt.Errorf("cloud: batch %d-%d: record %d: bad offset delta", first, last, i)
		}
		body = body[n:]
		if (i == 0) != (delta == 0) || delta > last-off {
			return nil, fmt.Errorf("cloud: batch %d-%d: record %d: offset delta %d out of order or range", first, last, i, delta)
		}
		off += delta
		size, n := binary.Uvarint(body)
		if n <= 0 || size == 0 || size > uint64(len(body)-n) {
			return nil, fmt.Errorf("cloud: batch %d-%d: record %d at offset %d: bad length", first, last, i, off)
		}
		body = body[n:]
		recs = append(recs, BatchRecord{Offset: off, Payload: body[:size:size]})
		body = body[size:]
	}
	if uint64(len(recs)) != count || off != last {
		return nil, fmt.Errorf("cloud: batch %d-%d: holds %d records ending at %d, headers say %d ending at %d",
			first, last, len(recs), off, count, last)
	}
	return recs, nil
}

var errNoHeader = errors.New("missing")

func headerUint(h nats.Header, name string) (uint64, error) {
	v := h.Get(name)
	if v == "" {
		return 0, fmt.Errorf("cloud: batch header %s: %w", name, errNoHeader)
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cloud: batch header %s %q is not a decimal offset", name, v)
	}
	return n, nil
}
