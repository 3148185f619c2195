package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// JetStreamOptions configure the JetStream sink.
type JetStreamOptions struct {
	URL    string // nats://host:port of the cloud ingest
	NodeID string
	Name   string // sink name, default "cloud"
	// EnsureLayout creates the cloud layout if it is missing (a NATS cluster
	// that no `holdfast cloud` has set up). Default false: the layout is the
	// cloud's.
	EnsureLayout bool
	// NoCompress sends batch bodies as they are instead of as zstd frames.
	NoCompress bool
	Logger     *slog.Logger
}

// JetStreamSink sends records to NATS JetStream as docs/format/cloud.md lays
// out: batches of one kind, stream and lane per message, zstd-compressed, and
// a resume that asks the stream which unconfirmed records it holds, so that no
// record is stored twice whatever the length of an outage. nats.go does the
// protocol, klauspost/compress the zstd.
type JetStreamSink struct {
	o  JetStreamOptions
	nc *nats.Conn
	js jetstream.JetStream

	harder atomic.Bool // compress harder: the buffer is filling (SetPressure)

	// Used by the syncer's goroutine only.
	seq   map[string]uint64   // JetStream stream → sequence of the latest PubAck
	skip  map[uint64]storedAt // offsets a resume found already stored, until their lane passes them
	batch cloud.Batch         // body under construction
}

// storedAt is where a resume found a record.
type storedAt struct {
	stream string
	seq    uint64
	lane   Lane
}

// NewJetStreamSink returns a sink; it connects on the first Resume.
func NewJetStreamSink(o JetStreamOptions) *JetStreamSink {
	if o.Name == "" {
		o.Name = "cloud"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &JetStreamSink{o: o, seq: map[string]uint64{}, skip: map[uint64]storedAt{}}
}

func (s *JetStreamSink) Name() string { return s.o.Name }

// SetPressure makes the sink compress harder while the buffer is under
// pressure (Pressured): fewer bytes for a slow uplink to carry.
func (s *JetStreamSink) SetPressure(on bool) { s.harder.Store(on) }

func (s *JetStreamSink) compression() cloud.Compression {
	switch {
	case s.o.NoCompress:
		return cloud.NoCompression
	case s.harder.Load():
		return cloud.HardCompression
	}
	return cloud.FastCompression
}

var resultStreams = []string{cloud.StreamEvents, cloud.StreamResults, cloud.StreamLedger}

// connect dials the cloud once; nats.go reconnects by itself afterwards. The
// reconnect buffer is off, so a publish while disconnected fails at once
// instead of being replayed later out of the syncer's sight.
func (s *JetStreamSink) connect(ctx context.Context) error {
	if s.nc != nil && !s.nc.IsClosed() {
		if !s.nc.IsConnected() {
			return errors.New("not connected to the cloud")
		}
		return nil
	}
	nc, err := nats.Connect(s.o.URL,
		nats.Name("holdfast "+s.o.NodeID),
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.Timeout(5*time.Second),
	)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", s.o.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	if s.o.EnsureLayout {
		if err := cloud.EnsureLayout(ctx, js, cloud.LayoutOptions{}); err != nil {
			nc.Close()
			return err
		}
	}
	s.nc, s.js = nc, js
	return nil
}

// Resume finds, per JetStream stream, which records at or after their lane's
// cursor the cloud already holds (docs/format/cloud.md, "the resume position").
func (s *JetStreamSink) Resume(ctx context.Context, lanes map[Lane]uint64, saved map[string]uint64) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	next := uint64(math.MaxUint64) // below it, every lane is confirmed
	for _, c := range lanes {
		next = min(next, c)
	}
	if len(lanes) == 0 {
		next = 0
	}
	// cursor is the lane cursor a record found in the cloud is compared
	// with; a lane the syncer does not run counts as confirmed up to next.
	cursor := func(l Lane) uint64 {
		if c, ok := lanes[l]; ok {
			return c
		}
		return next
	}
	for k, v := range saved {
		s.seq[k] = max(s.seq[k], v)
	}
	for off, at := range s.skip {
		if off < cursor(at.lane) {
			delete(s.skip, off) // its lane is past it
		}
	}
	found := 0
	for _, stream := range resultStreams {
		last, ok, err := cloud.LastOffset(ctx, s.js, s.o.NodeID, stream)
		if err != nil {
			return err
		}
		if !ok || last < next {
			continue
		}
		stored, err := cloud.StoredOffsets(ctx, s.js, s.o.NodeID, stream, s.seq[stream])
		if err != nil {
			return err
		}
		for _, st := range stored {
			lane, err := ParseLane(st.Lane)
			if err != nil {
				return fmt.Errorf("stream %s message %d: %w", stream, st.Seq, err)
			}
			if _, known := s.skip[st.Offset]; st.Offset >= cursor(lane) && !known {
				s.skip[st.Offset] = storedAt{stream, st.Seq, lane}
				found++
			}
		}
	}
	if found > 0 {
		s.o.Logger.Info("resume: records already in the cloud will not be sent again", "records", found)
	}
	return nil
}

func kindOf(t byte) string {
	switch t {
	case event.TypeEvent:
		return cloud.KindEvents
	case event.TypeWindow:
		return cloud.KindWindows
	case event.TypeAlert:
		return cloud.KindAlerts
	case event.TypeWatermark:
		return cloud.KindWatermarks
	case event.TypeLate:
		return cloud.KindLate
	case event.TypeLedger:
		return cloud.KindLedger
	}
	return ""
}

// Send publishes recs as batch messages, one or more per kind and stream, and
// waits for every PubAck.
func (s *JetStreamSink) Send(ctx context.Context, recs []Record) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	s.batch.Reset() // a failed Send may have left a body half built
	type group struct{ kind, stream string }
	var (
		order  []group
		byKey  = map[group][]int{}
		stream = map[string]string{} // kind → JetStream stream
	)
	for i, r := range recs {
		if _, ok := s.skip[r.Offset]; ok {
			continue
		}
		g := group{kindOf(r.Type), r.Stream}
		if g.kind == "" {
			continue
		}
		if _, ok := byKey[g]; !ok {
			order = append(order, g)
		}
		byKey[g] = append(byKey[g], i)
	}
	type pending struct {
		stream string
		first  uint64
		fut    jetstream.PubAckFuture
	}
	var futs []pending
	publish := func(g group, lane Lane) error {
		m := cloud.BatchMsgCompressed(s.o.NodeID, g.kind, g.stream, lane.String(), &s.batch, s.compression())
		fut, err := s.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish records %d-%d: %w", s.batch.First, s.batch.Last, err)
		}
		if stream[g.kind] == "" {
			stream[g.kind] = cloud.StreamFor(g.kind)
		}
		futs = append(futs, pending{stream[g.kind], s.batch.First, fut})
		s.batch.Reset()
		return nil
	}
	for _, g := range order {
		for _, i := range byKey[g] {
			r := recs[i]
			if s.batch.Count > 0 && len(s.batch.Body)+len(r.Payload)+20 > cloud.MaxBatchBody {
				if err := publish(g, r.Lane); err != nil {
					return err
				}
			}
			s.batch.Append(r.Offset, r.Payload)
		}
		if err := publish(g, recs[byKey[g][0]].Lane); err != nil {
			return err
		}
	}
	// The stream sequences move only once every message is confirmed: a
	// message confirmed before another failed must still be found by the
	// resume, which starts after the saved sequence.
	acked := map[string]uint64{}
	for _, p := range futs {
		select {
		case ack := <-p.fut.Ok():
			acked[p.stream] = max(acked[p.stream], ack.Sequence)
		case err := <-p.fut.Err():
			s.settle()
			return fmt.Errorf("batch from record %d not confirmed: %w", p.first, err)
		case <-ctx.Done():
			s.settle()
			return fmt.Errorf("waiting for the cloud's acknowledgements: %w", ctx.Err())
		}
	}
	for stream, seq := range acked {
		s.seq[stream] = max(s.seq[stream], seq)
	}
	for _, r := range recs {
		delete(s.skip, r.Offset)
	}
	return nil
}

// settleWait bounds how long a failed Send waits for its other publishes.
const settleWait = 5 * time.Second

// settle is called when a Send fails with publishes of it still unanswered:
// the resume that follows asks the stream what it holds, and the answer must
// not change under it. It waits for them; if they do not end in time it drops
// the connection, so that none of them can land after the resume's check.
func (s *JetStreamSink) settle() {
	select {
	case <-s.js.PublishAsyncComplete():
	case <-time.After(settleWait):
		s.o.Logger.Warn("publishes still unanswered after a failed batch; reconnecting before the resume")
		s.nc.Close()
		s.nc = nil
	}
}

// Positions are the stream sequences to save with the lane cursors: per
// stream, the latest PubAck's sequence, or just before the earliest record a
// resume found stored that its lane has not passed yet, so that a restart
// finds it again.
func (s *JetStreamSink) Positions() map[string]uint64 {
	out := make(map[string]uint64, len(s.seq))
	for k, v := range s.seq {
		out[k] = v
	}
	for _, at := range s.skip {
		if v, ok := out[at.stream]; !ok || at.seq-1 < v {
			out[at.stream] = at.seq - 1
		}
	}
	return out
}

func (s *JetStreamSink) Close() error {
	if s.nc != nil {
		s.nc.Close()
	}
	return nil
}
