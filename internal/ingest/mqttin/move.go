package mqttin

import (
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// moves lets a device be sent to another node without an event stored by
// both or by neither (Broker.MoveClients). Per connection it counts the
// publishes taken in but not yet acknowledged; once a connection is marked
// moving, its new publishes are neither stored nor acknowledged (the device
// sends them again at its new node), and the DISCONNECT goes out only after
// every publish taken in before has had its acknowledgement written.
type moves struct {
	conns sync.Map // *mqtt.Client → *moveState, MQTT 5 connections only
}

type moveState struct {
	moving   atomic.Bool
	inflight atomic.Int64 // publishes stored or being stored, their ack not yet written
	acks     sync.Map     // packet id → struct{}: acks mochi is still to write
}

func newMoves() *moves { return &moves{} }

func (m *moves) of(cl *mqtt.Client) *moveState {
	if st, ok := m.conns.Load(cl); ok {
		return st.(*moveState)
	}
	st, _ := m.conns.LoadOrStore(cl, &moveState{})
	return st.(*moveState)
}

func (m *moves) forget(cl *mqtt.Client) { m.conns.Delete(cl) }

// moveHook keeps the counts: it sees every acknowledgement written and every
// client gone.
type moveHook struct {
	mqtt.HookBase
	m *moves
}

func (h *moveHook) ID() string { return "holdfast-moves" }

func (h *moveHook) Provides(b byte) bool { return b == mqtt.OnPacketSent || b == mqtt.OnDisconnect }

// OnPacketSent counts an acknowledgement written for a publish taken in.
func (h *moveHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if t := pk.FixedHeader.Type; t != packets.Puback && t != packets.Pubrec || cl.Properties.ProtocolVersion != 5 {
		return
	}
	st := h.m.of(cl)
	if _, ok := st.acks.LoadAndDelete(pk.PacketID); ok {
		st.inflight.Add(-1)
	}
}

func (h *moveHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.m.forget(cl) }

// MoveClients sends every connected MQTT 5 device that owner says belongs
// elsewhere on its way (a site node after a membership change): from now
// on its publishes here are neither stored nor acknowledged; once the
// acknowledgements of those taken in before are written, it gets DISCONNECT
// 0x9C "use another server" with the owner's address as server reference,
// and the connection is closed. MQTT 3.1.1 has no such disconnect: those
// devices stay, and their events are forwarded. It returns how many it
// moves; the disconnects follow on their own goroutines, each within wait.
func (b *Broker) MoveClients(owner func(device string) (ref string, ok bool), wait time.Duration) int {
	moved := 0
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Properties.ProtocolVersion != 5 || cl.Closed() {
			continue
		}
		dev := string(cl.Properties.Username)
		if dev == "" {
			dev = cl.ID
		}
		ref, ok := owner(dev)
		if !ok {
			continue
		}
		st := b.moves.of(cl)
		if st.moving.Swap(true) {
			continue // already on its way
		}
		moved++
		go func() {
			deadline := time.Now().Add(wait)
			for st.inflight.Load() > 0 && time.Now().Before(deadline) && !cl.Closed() {
				time.Sleep(2 * time.Millisecond)
			}
			err := cl.WritePacket(packets.Packet{
				FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
				ReasonCode:  packets.ErrUseAnotherServer.Code,
				Properties:  packets.Properties{ServerReference: ref},
			})
			if err != nil {
				b.opts.Logger.Debug("write DISCONNECT to move a device", "client", cl.ID, "error", err)
			}
			cl.Stop(packets.ErrUseAnotherServer)
		}()
	}
	return moved
}
