package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	Logger       *slog.Logger
}

// JetStreamSink sends records to NATS JetStream as docs/format/cloud.md lays
// out: one message per record, Nats-Msg-Id node:offset, and a resume that asks
// the stream what of the unconfirmed tail it holds, so that no record is stored
// twice whatever the length of an outage. nats.go does the protocol.
type JetStreamSink struct {
	o  JetStreamOptions
	nc *nats.Conn
	js jetstream.JetStream

	// Used by the syncer's goroutine only.
	seq  map[string]uint64   // JetStream stream → sequence of the latest confirmed message
	skip map[uint64]struct{} // offsets the resume found already stored
}

// NewJetStreamSink returns a sink; it connects on the first Resume.
func NewJetStreamSink(o JetStreamOptions) *JetStreamSink {
	if o.Name == "" {
		o.Name = "cloud"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &JetStreamSink{o: o, seq: map[string]uint64{}, skip: map[uint64]struct{}{}}
}

func (s *JetStreamSink) Name() string { return s.o.Name }

var resultStreams = []string{cloud.StreamEvents, cloud.StreamResults}

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

// Resume finds, per JetStream stream, which records at or after next the cloud
// already holds (docs/format/cloud.md, "the resume position").
func (s *JetStreamSink) Resume(ctx context.Context, next uint64, saved map[string]uint64) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	for k, v := range saved {
		s.seq[k] = max(s.seq[k], v)
	}
	clear(s.skip)
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
		for _, off := range stored {
			if off >= next {
				s.skip[off] = struct{}{}
			}
		}
	}
	if len(s.skip) > 0 {
		s.o.Logger.Info("resume: records already in the cloud will not be sent again", "records", len(s.skip))
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
	}
	return ""
}

// Send publishes recs and waits for every PubAck.
func (s *JetStreamSink) Send(ctx context.Context, recs []Record) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	type pending struct {
		stream string
		fut    jetstream.PubAckFuture
	}
	futs := make([]pending, 0, len(recs))
	for _, r := range recs {
		if _, ok := s.skip[r.Offset]; ok {
			continue
		}
		kind := kindOf(r.Type)
		if kind == "" {
			continue
		}
		fut, err := s.js.PublishMsgAsync(cloud.NewMsg(s.o.NodeID, kind, r.Stream, r.Offset, r.Payload))
		if err != nil {
			return fmt.Errorf("publish record %d: %w", r.Offset, err)
		}
		futs = append(futs, pending{cloud.StreamFor(kind), fut})
	}
	for _, p := range futs {
		select {
		case ack := <-p.fut.Ok():
			s.seq[p.stream] = max(s.seq[p.stream], ack.Sequence)
		case err := <-p.fut.Err():
			return fmt.Errorf("record %s not confirmed: %w", p.fut.Msg().Header.Get(cloud.HeaderOffset), err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for the cloud's acknowledgements: %w", ctx.Err())
		}
	}
	for _, r := range recs {
		delete(s.skip, r.Offset)
	}
	return nil
}

// Positions are the stream sequences to save with the sync cursor.
func (s *JetStreamSink) Positions() map[string]uint64 {
	out := make(map[string]uint64, len(s.seq))
	for k, v := range s.seq {
		out[k] = v
	}
	return out
}

func (s *JetStreamSink) Close() error {
	if s.nc != nil {
		s.nc.Close()
	}
	return nil
}
