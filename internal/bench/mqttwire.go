package bench

// The MQTT 3.1.1 wire format the bench speaks, written by hand.
//
// The bench must not be the bottleneck of what it measures: a general client
// (paho) spends about 24 µs of CPU per QoS 1 message on tokens, channels and
// goroutines, which on a small machine caps any broker near 55 K/s. The bench
// only ever connects, publishes at QoS 1 and reads PUBACKs, so it does that
// byte work itself: each device's PUBLISH header and topic are encoded once,
// a message is that prefix with its packet id patched in and the event's
// payload appended, and PUBACKs are parsed straight out of a bufio.Reader's
// buffer, as many as one read brought in.

import (
	"bufio"
	"errors"
	"fmt"
)

// Packet types and fixed header flags.
const (
	pktConnect    = 0x10
	pktConnack    = 0x20
	pktPublishQoS = 0x32 // PUBLISH, QoS 1, no DUP, no RETAIN
	pktPuback     = 0x40
	pktPingresp   = 0xd0
	pktDisconnect = 0xe0
)

// appendRemainingLength appends n in MQTT's variable-length encoding.
func appendRemainingLength(dst []byte, n int) []byte {
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			return dst
		}
	}
}

// appendConnect appends a CONNECT packet: MQTT 3.1.1, or 5 with v5 (an
// empty property list), clean session, no will, no credentials, keep-alive
// off (the bench's connections are never idle long and it sends no PINGREQ).
func appendConnect(dst []byte, clientID string, v5 bool) []byte {
	level, props := byte(4), 0
	if v5 {
		level, props = 5, 1
	}
	rl := 10 + props + 2 + len(clientID)
	dst = append(dst, pktConnect)
	dst = appendRemainingLength(dst, rl)
	dst = append(dst, 0, 4, 'M', 'Q', 'T', 'T', level, 0x02, 0, 0)
	if v5 {
		dst = append(dst, 0)
	}
	dst = append(dst, byte(len(clientID)>>8), byte(len(clientID)))
	return append(dst, clientID...)
}

// connackError returns nil for a CONNACK that accepts the connection.
func connackError(p []byte) error {
	if len(p) != 4 || p[0] != pktConnack || p[1] != 2 {
		return fmt.Errorf("not a CONNACK: % x", p)
	}
	if p[3] != 0 {
		return fmt.Errorf("connection refused, return code %d", p[3])
	}
	return nil
}

// publisher encodes one device's QoS 1 PUBLISH packets. The topic, with its
// length, is encoded once; each message patches in its packet id and appends
// its payload.
type publisher struct {
	topic   []byte // length-prefixed topic name
	payload []byte // scratch for the payload being encoded
	v5      bool   // MQTT 5: an empty property list follows the packet id
}

func newPublisher(topic string) *publisher {
	t := make([]byte, 0, 2+len(topic))
	t = append(t, byte(len(topic)>>8), byte(len(topic)))
	return &publisher{topic: append(t, topic...), payload: make([]byte, 0, 64)}
}

// appendPublish appends a PUBLISH of payload with packet id to dst.
func (p *publisher) appendPublish(dst []byte, id uint16, payload []byte) []byte {
	props := 0
	if p.v5 {
		props = 1
	}
	dst = append(dst, pktPublishQoS)
	dst = appendRemainingLength(dst, len(p.topic)+2+props+len(payload))
	dst = append(dst, p.topic...)
	dst = append(dst, byte(id>>8), byte(id))
	if p.v5 {
		dst = append(dst, 0)
	}
	return append(dst, payload...)
}

// errPacketTooLarge: the broker sent a packet the bench does not expect and
// cannot buffer (it subscribes to nothing, so it is sent no PUBLISH).
var errPacketTooLarge = errors.New("packet from the broker larger than the read buffer")

// packetSize returns the total size of the packet that b starts with, or
// ok=false if b does not yet hold its whole fixed header.
func packetSize(b []byte) (size int, ok bool, err error) {
	rl, mul := 0, 1
	for i := 1; i < len(b) && i <= 4; i++ {
		rl += int(b[i]&0x7f) * mul
		if b[i]&0x80 == 0 {
			return 1 + i + rl, true, nil
		}
		mul <<= 7
	}
	if len(b) > 4 {
		return 0, false, errors.New("malformed remaining length")
	}
	return 0, false, nil
}

// scanAcks calls onAck with the packet id of every PUBACK among the whole
// packets at the start of b, and returns how many bytes they take and how
// many bytes of b the next packet needs before it can be scanned (want ≤ len(b)
// never happens: what is left of b is incomplete). PINGRESP is skipped; any
// other packet is an error.
func scanAcks(b []byte, onAck func(id uint16)) (used, want int, err error) {
	for {
		size, ok, err := packetSize(b[used:])
		if err != nil {
			return used, 0, err
		}
		if !ok {
			return used, len(b) - used + 1, nil
		}
		if used+size > len(b) {
			return used, size, nil
		}
		p := b[used : used+size]
		switch {
		case p[0] == pktPuback && size == 4:
			onAck(uint16(p[2])<<8 | uint16(p[3]))
		case p[0] == pktPingresp && size == 2:
		default:
			return used, 0, fmt.Errorf("unexpected packet from the broker: % x", p[:min(len(p), 8)])
		}
		used += size
	}
}

// readAcks waits until at least one whole packet from the broker is buffered
// in br, then scans every whole packet buffered (scanAcks) and consumes them.
// A packet split across reads stays in br's buffer for the next call.
func readAcks(br *bufio.Reader, onAck func(id uint16)) error {
	want := 2 // the smallest packet
	for {
		if _, err := br.Peek(want); err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				err = errPacketTooLarge
			}
			return err
		}
		buf, _ := br.Peek(br.Buffered())
		used, w, err := scanAcks(buf, onAck)
		if err != nil {
			return err
		}
		if _, err := br.Discard(used); err != nil {
			return err
		}
		if used > 0 {
			return nil
		}
		want = w
	}
}
