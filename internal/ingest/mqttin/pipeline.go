package mqttin

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// The pipeline takes a connection's QoS 0 and 1 publishes off mochi's read
// goroutine, so that a device with several messages in flight is not read
// one fsync at a time. The read goroutine decodes each message and applies
// the gates (ingester.prepare: topic, payload, pressure, rate limit, held
// on the read goroutine as before) and queues it on the connection's pipe;
// the pipe's goroutine, running while the pipe holds messages, appends the
// events queued since its last round with one Append — one group commit —
// and then answers each message in the order it came in: PUBACK once its
// event is durable, the negative ack or the closed connection the outcome
// calls for, and routing to subscribers. So PUBACKs still leave only after
// the fsync, in order [MQTT-4.6.0-2], and a connection's events are stored
// in the order it sent them; what changes is that its messages in flight
// share an fsync and its acks leave together.
//
// QoS 2 keeps the synchronous path (mochi keeps its PUBREC state): its
// publish waits until the pipe has answered every message before it.
// Nothing queued after a message that closes the connection (3.1.1 refused
// or storage unavailable) is stored: the device resends it.

// pipe is one connection's queue of messages taken in and not answered.
type pipe struct {
	mu      sync.Mutex
	idle    *sync.Cond // signalled when the goroutine stops with nothing queued
	queue   *round     // nil while nothing is queued
	running bool
}

// round is the messages a pipe's goroutine answers in one round, and its
// scratch for appending them. Rounds are recycled through rounds, so that a
// busy connection allocates none and an idle one holds none.
type round struct {
	items  []queued
	evs    []event.Event
	starts []time.Time
}

var rounds = sync.Pool{New: func() any { return new(round) }}

// recycle clears r, so that it keeps no message alive, and pools it.
func (r *round) recycle() {
	clear(r.items)
	clear(r.evs)
	r.items, r.evs, r.starts = r.items[:0], r.evs[:0], r.starts[:0]
	rounds.Put(r)
}

// queued is one message in a pipe: an event to append (ready), or an
// outcome decided when it was read.
type queued struct {
	pk    packets.Packet
	ev    event.Event
	res   result
	ready bool
	at    time.Time
}

// pipes are the connections' pipes, and the goroutines serving them.
type pipes struct {
	m  sync.Map // *mqtt.Client → *pipe
	wg sync.WaitGroup
	n  atomic.Int64 // pipes with a goroutine running, for tests
}

func (ps *pipes) of(cl *mqtt.Client) *pipe {
	if p, ok := ps.m.Load(cl); ok {
		return p.(*pipe)
	}
	p := &pipe{}
	p.idle = sync.NewCond(&p.mu)
	actual, _ := ps.m.LoadOrStore(cl, p)
	return actual.(*pipe)
}

// forget drops a closed connection's pipe; its goroutine, if running,
// finishes on its own.
func (ps *pipes) forget(cl *mqtt.Client) { ps.m.Delete(cl) }

// enqueue takes a QoS 0 or 1 publish in: decoded and gated here, on the
// read goroutine, appended and answered by the pipe's goroutine.
func (h *ingestHook) enqueue(cl *mqtt.Client, pk packets.Packet) {
	mode := limitHold
	if cl.Properties.ProtocolVersion == 5 {
		mode = limitRefuse
	}
	q := queued{pk: pk, at: time.Now()}
	q.ev, q.res, q.ready = h.in.prepare(h.ctx, pk.TopicName, pk.Payload, mode)
	p := h.pipes.of(cl)
	p.mu.Lock()
	if p.queue == nil {
		p.queue = rounds.Get().(*round)
	}
	p.queue.items = append(p.queue.items, q)
	start := !p.running
	p.running = true
	p.mu.Unlock()
	if start {
		h.pipes.wg.Add(1)
		h.pipes.n.Add(1)
		go h.serve(cl, p)
	}
	h.in.slowRefused(h.ctx, q.res) // after its 0x97 is on its way
}

// waitIdle returns once cl's pipe has answered every message queued.
func (h *ingestHook) waitIdle(cl *mqtt.Client) {
	p := h.pipes.of(cl)
	p.mu.Lock()
	for p.running {
		p.idle.Wait()
	}
	p.mu.Unlock()
}

// serve appends and answers what p holds until it is empty.
func (h *ingestHook) serve(cl *mqtt.Client, p *pipe) {
	defer h.pipes.wg.Done()
	defer h.pipes.n.Add(-1)
	for {
		p.mu.Lock()
		r := p.queue
		p.queue = nil
		if r == nil {
			p.running = false
			p.idle.Broadcast()
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		batch := r.items
		for i := 0; i < len(batch); {
			if cl.Closed() || h.ctx.Err() != nil {
				h.abandon(cl, batch[i:]) // not stored: the device resends
				break
			}
			if !batch[i].ready {
				h.answer(cl, batch[i].pk, batch[i].res)
				i++
				continue
			}
			j := i
			r.evs, r.starts = r.evs[:0], r.starts[:0]
			for ; j < len(batch) && batch[j].ready; j++ {
				r.evs = append(r.evs, batch[j].ev)
				r.starts = append(r.starts, batch[j].at)
			}
			res := h.in.commit(h.ctx, r.evs, r.starts)
			if res.outcome == outcomeDurable && !cl.Closed() {
				h.ackAll(cl, batch[i:j])
				i = j
				continue
			}
			for k := i; k < j; k++ {
				if cl.Closed() {
					h.abandon(cl, batch[k:j])
					break
				}
				h.answer(cl, batch[k].pk, res)
			}
			i = j
		}
		r.recycle()
	}
}

// answer does what a message's outcome calls for, as the synchronous path
// (hook.go) has mochi do it: see the package comment's table.
func (h *ingestHook) answer(cl *mqtt.Client, pk packets.Packet, res result) {
	v5, qos := cl.Properties.ProtocolVersion == 5, pk.FixedHeader.Qos
	switch res.outcome {
	case outcomeDurable:
		if qos > 0 {
			h.ack(cl, pk)
		}
		h.route(pk)
	case outcomeInvalid:
		h.log.Debug("publish rejected", "client", cl.ID, "topic", pk.TopicName, "reason", res.reason, "error", res.err)
		switch {
		case qos == 0:
		case v5:
			code := codePayloadInvalid
			if res.reason == reasonBadTopic {
				code = codeTopicInvalid
			}
			h.nack(cl, pk, code, res.err.Error())
		default:
			h.ack(cl, pk) // 3.1.1 has no negative ack and a resend could never succeed
		}
	case outcomeRefused:
		h.log.Debug("publish kept out under buffer pressure", "client", cl.ID, "topic", pk.TopicName, "reason", res.reason)
		switch {
		case qos == 0:
		case v5:
			h.nack(cl, pk, packets.ErrQuotaExceeded, res.err.Error())
		case res.reason == pressure.Sampled:
			h.ack(cl, pk) // handled: a resend would be sampled again
		default:
			cl.Stop(packets.ErrQuotaExceeded) // keep it and send it later
		}
	case outcomeLimited:
		h.log.Debug("publish over its device's rate limit", "client", cl.ID, "topic", pk.TopicName)
		if qos > 0 {
			h.nack(cl, pk, packets.ErrQuotaExceeded, res.err.Error())
		}
	case outcomeUnavailable:
		h.log.Debug("publish not stored", "client", cl.ID, "topic", pk.TopicName, "error", res.err)
		switch {
		case qos == 0:
		case v5:
			h.nack(cl, pk, codeUnavailable, codeUnavailable.Reason)
		default:
			cl.Stop(packets.ErrServerUnavailable) // no ack: the client resends on reconnect
		}
	}
	if qos > 0 && cl.Closed() {
		h.settled(cl, pk.PacketID)
	}
}

// ackAll acknowledges stored messages: their PUBACKs in one write, then
// the routing. A success PUBACK is 4 bytes (type, length 2, packet id) in
// 3.1.1 and 5 alike; written under the client's lock, as mochi writes.
func (h *ingestHook) ackAll(cl *mqtt.Client, qs []queued) {
	buf := make([]byte, 0, 4*len(qs))
	for _, q := range qs {
		if q.pk.FixedHeader.Qos > 0 {
			buf = append(buf, packets.Puback<<4, 2, byte(q.pk.PacketID>>8), byte(q.pk.PacketID))
		}
	}
	if len(buf) > 0 {
		cl.Lock()
		_, err := cl.Net.Conn.Write(buf)
		cl.Unlock()
		if err != nil {
			h.log.Debug("write acks", "client", cl.ID, "error", err)
		}
		for _, q := range qs {
			if q.pk.FixedHeader.Qos > 0 {
				h.settled(cl, q.pk.PacketID) // a move waits no more for it
			}
		}
	}
	for _, q := range qs {
		h.route(q.pk)
	}
}

// ack writes a QoS 1 publish's PUBACK.
func (h *ingestHook) ack(cl *mqtt.Client, pk packets.Packet) {
	err := cl.WritePacket(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Puback},
		PacketID:    pk.PacketID,
		ReasonCode:  packets.CodeSuccess.Code,
	})
	if err != nil {
		h.log.Debug("write ack", "client", cl.ID, "error", err)
	}
}

// route passes a stored message on to the broker's subscribers, as mochi
// does with what it acknowledges, when there are any.
func (h *ingestHook) route(pk packets.Packet) {
	if h.srv == nil || (atomic.LoadInt64(&h.srv.Info.Subscriptions) == 0 && !pk.FixedHeader.Retain) {
		return
	}
	if err := h.srv.Publish(pk.TopicName, pk.Payload, pk.FixedHeader.Retain, pk.FixedHeader.Qos); err != nil {
		h.log.Debug("route device message", "topic", pk.TopicName, "error", err)
	}
}

// abandon leaves messages unanswered: the connection is gone or the broker
// closing. Their events were not stored.
func (h *ingestHook) abandon(cl *mqtt.Client, qs []queued) {
	for _, q := range qs {
		if q.pk.FixedHeader.Qos > 0 {
			h.settled(cl, q.pk.PacketID)
		}
	}
}

// settled counts a publish a move waits for as answered: acknowledged, or
// never to be.
func (h *ingestHook) settled(cl *mqtt.Client, id uint16) {
	if h.moves == nil || cl.Properties.ProtocolVersion != 5 {
		return
	}
	st := h.moves.of(cl)
	if _, ok := st.acks.LoadAndDelete(id); ok {
		st.inflight.Add(-1)
	}
}
