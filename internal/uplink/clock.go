package uplink

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/holdfast-edge/holdfast/internal/clock"
)

// The cloud's clock, as JetStream shows it. A PubAck carries no time, but
// the message it confirms does: the cloud stamped it when it stored it,
// after the node published it and before the node saw the PubAck. Reading
// the stored message back ($JS.API.STREAM.MSG.GET, or DIRECT.GET where the
// stream allows it: both give its time) therefore bounds the offset of the
// node's wall clock from the cloud's: it lies between stored − acked and
// stored − published. The estimate is the middle, stored − (published +
// rtt/2), off by at most rtt/2 (clock.Sample). Of the messages of a batch
// the one with the shortest round trip is read: the tightest bound.

// clockInterval is how often at most the sink reads the cloud's clock.
const clockInterval = 10 * time.Second

// clockProbe is the message of the last Send that bounds the offset most
// tightly, and when the cloud's clock was last read. Used by the syncer's
// goroutine only.
type clockProbe struct {
	stream string
	seq    uint64
	sent   time.Time
	rtt    time.Duration
	last   time.Time // when the cloud's clock was last read (monotonic)
}

// note considers the message published at sent and confirmed by ack now.
func (c *clockProbe) note(sent time.Time, ack *jetstream.PubAck) {
	rtt := time.Since(sent)
	if ack.Duplicate || sent.IsZero() || (c.seq != 0 && rtt >= c.rtt) {
		return // a duplicate was stored by its first copy, at another time
	}
	c.stream, c.seq, c.sent, c.rtt = ack.Stream, ack.Sequence, sent, rtt
}

// measureClock reads the time the cloud stored the best message of the last
// Send at, on another goroutine, and hands the sample to OnClock; at most
// every clockInterval.
func (s *JetStreamSink) measureClock() {
	c := s.clock
	s.clock = clockProbe{last: c.last}
	if s.o.OnClock == nil || c.seq == 0 || (!c.last.IsZero() && time.Since(c.last) < clockInterval) {
		return
	}
	s.clock.last = time.Now()
	js, onClock, logger := s.js, s.o.OnClock, s.o.Logger
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, c.stream)
		if err == nil {
			var m *jetstream.RawStreamMsg
			if m, err = st.GetMsg(ctx, c.seq); err == nil {
				onClock(clock.Sample{Sent: c.sent, RTT: c.rtt, Server: m.Time})
				return
			}
		}
		logger.Debug("cannot read the cloud's clock", "stream", c.stream, "seq", c.seq, "err", err)
	}()
}
