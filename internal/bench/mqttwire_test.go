package bench

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// decodePublish reads one MQTT 3.1.1 QoS 1 PUBLISH from b, independently of
// the encoder, and returns what is left of b.
func decodePublish(t *testing.T, b []byte) (topic string, id uint16, payload, rest []byte) {
	t.Helper()
	require.Equal(t, byte(0x32), b[0], "PUBLISH, QoS 1, no DUP or RETAIN")
	rl, mul, i := 0, 1, 1
	for ; ; i++ {
		rl += int(b[i]&0x7f) * mul
		mul *= 128
		if b[i]&0x80 == 0 {
			break
		}
	}
	body := b[i+1 : i+1+rl]
	tl := int(body[0])<<8 | int(body[1])
	topic = string(body[2 : 2+tl])
	id = uint16(body[2+tl])<<8 | uint16(body[3+tl])
	return topic, id, body[4+tl:], b[i+1+rl:]
}

func TestPublishEncoding(t *testing.T) {
	dev := newDevices(7)[6]
	p := newPublisher(dev.topic)
	var stream []byte
	ids := []uint16{1, 2, 255, 256, 0x1234, 65535}
	var payloads [][]byte
	for _, id := range ids {
		pl, _ := dev.appendPayload(nil, 1_700_000_000_000+int64(id))
		payloads = append(payloads, pl)
		stream = p.appendPublish(stream, id, pl)
	}
	// A payload long enough for a two-byte remaining length.
	long := bytes.Repeat([]byte("x"), 300)
	stream = p.appendPublish(stream, 7, long)
	ids, payloads = append(ids, 7), append(payloads, long)

	rest := stream
	for i, id := range ids {
		var (
			topic   string
			gotID   uint16
			payload []byte
		)
		topic, gotID, payload, rest = decodePublish(t, rest)
		assert.Equal(t, "devices/dev-000007/temperature", topic)
		assert.Equal(t, id, gotID)
		assert.Equal(t, payloads[i], payload)
	}
	assert.Empty(t, rest)
	assert.Contains(t, string(payloads[0]), `{"ts":1700000000001,"value":`)
}

func TestConnectEncoding(t *testing.T) {
	b := appendConnect(nil, "bench-1-dev-000001", false)
	assert.Equal(t, []byte{0x10, byte(10 + 2 + 18), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 18}, b[:14])
	assert.Equal(t, "bench-1-dev-000001", string(b[14:]))

	assert.NoError(t, connackError([]byte{0x20, 2, 0, 0}))
	assert.ErrorContains(t, connackError([]byte{0x20, 2, 0, 5}), "return code 5")
	assert.Error(t, connackError([]byte{0x40, 2, 0, 1}))
}

// pubacks encodes MQTT 3.1.1 PUBACKs for ids (as the spec lays them out:
// type 4, remaining length 2, the packet id), with a PINGRESP after every
// 50th.
func pubacks(ids []uint16) []byte {
	var b bytes.Buffer
	for i, id := range ids {
		b.Write([]byte{0x40, 2, byte(id >> 8), byte(id)})
		if i%50 == 49 {
			b.Write([]byte{0xd0, 0})
		}
	}
	return b.Bytes()
}

// chunkReader returns at most a random 1–9 bytes per Read.
type chunkReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (c *chunkReader) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), 1+c.rng.IntN(9))])
}

func TestReadAcksAcrossSplitReads(t *testing.T) {
	ids := make([]uint16, 600)
	for i := range ids {
		ids[i] = uint16(i*131 + 1)
	}
	ids = append(ids, 65535)
	wire := pubacks(ids)

	for name, r := range map[string]io.Reader{
		"one byte a read": iotest.OneByteReader(bytes.NewReader(wire)),
		"random chunks":   &chunkReader{bytes.NewReader(wire), rand.New(rand.NewPCG(1, 2))},
		"all at once":     bytes.NewReader(wire),
	} {
		t.Run(name, func(t *testing.T) {
			br := bufio.NewReaderSize(r, 64)
			var got []uint16
			for len(got) < len(ids) {
				require.NoError(t, readAcks(br, func(id uint16) { got = append(got, id) }))
			}
			assert.Equal(t, ids, got)
			assert.ErrorIs(t, readAcks(br, func(uint16) {}), io.EOF)
		})
	}

	t.Run("scan a buffer with a split packet at the end", func(t *testing.T) {
		for cut := range len(wire) {
			var got []uint16
			used, want, err := scanAcks(wire[:cut], func(id uint16) { got = append(got, id) })
			require.NoError(t, err)
			assert.LessOrEqual(t, used, cut)
			assert.Greater(t, used+want, cut, "what is left needs more bytes")
			next, _, err := scanAcks(wire[used:], func(id uint16) { got = append(got, id) })
			require.NoError(t, err)
			assert.Equal(t, len(wire)-used, next)
			require.Equal(t, ids, got, "cut at %d", cut)
		}
	})
}

func TestReadAcksRejectsOtherPackets(t *testing.T) {
	for name, wire := range map[string][]byte{
		"publish":           {0x30, 3, 0, 1, 'a'},
		"puback, bad size":  {0x40, 3, 0, 1, 0},
		"huge":              {0x40, 0xff, 0xff, 0xff, 0x7f},
		"malformed length":  {0x40, 0xff, 0xff, 0xff, 0xff, 0x01},
		"after a good ack":  {0x40, 2, 0, 1, 0x90, 3, 0, 1, 0},
		"connack mid-run":   {0x20, 2, 0, 0},
		"disconnect by srv": {0xe0, 0},
	} {
		br := bufio.NewReaderSize(bytes.NewReader(wire), 64)
		var err error
		for range 2 {
			if err = readAcks(br, func(uint16) {}); err != nil {
				break
			}
		}
		assert.Error(t, err, name)
		assert.NotErrorIs(t, err, io.EOF, name)
	}
}
