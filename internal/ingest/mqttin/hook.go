package mqttin

import (
	"context"
	"log/slog"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// Negative acknowledgements sent to MQTT 5 clients (valid PUBACK/PUBREC reason codes).
var (
	codeTopicInvalid   = packets.Code{Code: packets.ErrTopicNameInvalid.Code, Reason: "topic must be devices/{device_id}/{stream}"}
	codePayloadInvalid = packets.ErrPayloadFormatInvalid
	codeUnavailable    = packets.Code{Code: packets.ErrImplementationSpecificError.Code, Reason: "storage unavailable"}
)

// ingestHook is the mochi hook that stores what devices publish before
// they are acknowledged. It runs on the publishing client's read goroutine:
// QoS 0 and 1 messages go on to the connection's pipe (pipeline.go), which
// appends and acknowledges them in order; a QoS 2 message is stored there
// and then, once the pipe is idle, and mochi writes its PUBREC.
type ingestHook struct {
	mqtt.HookBase
	in    *ingester
	ctx   context.Context // cancelled when the Broker closes
	log   *slog.Logger
	moves *moves
	srv   *mqtt.Server // routes what the pipes store; nil in tests without one
	pipes pipes
}

func (h *ingestHook) ID() string { return "holdfast-ingest" }

func (h *ingestHook) Provides(b byte) bool { return b == mqtt.OnPublish || b == mqtt.OnDisconnect }

// OnDisconnect drops the connection's pipe.
func (h *ingestHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.pipes.forget(cl) }

// wait returns once every pipe's goroutine has ended (the Broker closed).
func (h *ingestHook) wait() { h.pipes.wg.Wait() }

// OnPublish returns nil for a durable event (mochi acks and routes it),
// packets.CodeSuccessIgnore to have mochi ack without routing, and
// packets.ErrRejectPacket when it has answered itself or no ack may be sent.
// It sends negative acks itself rather than returning a packets.Code, because
// mochi would answer a QoS 2 publish with a PUBACK and log every refusal as an error.
func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !isDeviceTopic(pk.TopicName) {
		return pk, nil // the broker's own publishes, the pipes' routing among them, are not events
	}
	if pk.FixedHeader.Qos > 0 && h.moves != nil && cl.Properties.ProtocolVersion == 5 {
		// Counted in flight before the check (MoveClients marks, then
		// reads the count): either the move waits for this publish's ack,
		// or this publish sees the move.
		st := h.moves.of(cl)
		st.acks.Store(pk.PacketID, struct{}{})
		st.inflight.Add(1)
		if st.moving.Load() {
			// On its way to another node: neither stored nor acknowledged
			// here; the device sends it again there.
			if _, ok := st.acks.LoadAndDelete(pk.PacketID); ok {
				st.inflight.Add(-1)
			}
			return pk, packets.ErrRejectPacket
		}
	}
	if pk.FixedHeader.Qos < 2 {
		h.enqueue(cl, pk) // answered by the connection's pipe
		return pk, packets.ErrRejectPacket
	}
	h.waitIdle(cl) // QoS 2: after every message before it
	defer func() {
		// An ack mochi or nack wrote counts down in OnPacketSent; a
		// publish left unacknowledged counts down here.
		if cl.Closed() {
			h.settled(cl, pk.PacketID)
		}
	}()
	v5 := cl.Properties.ProtocolVersion == 5
	mode := limitHold
	if v5 {
		mode = limitRefuse
	}
	res := h.in.handle(h.ctx, pk.TopicName, pk.Payload, mode)
	switch {
	case res.outcome == outcomeDurable:
		return pk, nil // mochi writes the PUBREC and routes
	case !v5 && (res.outcome == outcomeInvalid || res.outcome == outcomeRefused && res.reason == pressure.Sampled):
		// 3.1.1 has no negative ack, and a resend could never succeed (or
		// would be sampled again): mochi writes the PUBREC, nothing routed.
		return pk, packets.CodeSuccessIgnore
	}
	h.answer(cl, pk, res) // a negative PUBREC or the connection closed, as a pipe does
	h.in.slowRefused(h.ctx, res)
	return pk, packets.ErrRejectPacket
}

// maxReasonLen bounds the reason string sent back, which may quote the payload.
const maxReasonLen = 256

// truncate shortens s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// nack answers a QoS 1 or 2 publish from an MQTT 5 client with an error reason code.
func (h *ingestHook) nack(cl *mqtt.Client, pk packets.Packet, code packets.Code, reason string) {
	typ := byte(packets.Puback)
	if pk.FixedHeader.Qos == 2 {
		typ = packets.Pubrec // an error PUBREC ends the QoS 2 exchange
	}
	reason = truncate(reason, maxReasonLen)
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    pk.PacketID,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: reason},
	}
	if err := cl.WritePacket(ack); err != nil {
		h.log.Debug("write negative ack", "client", cl.ID, "error", err)
	}
}
