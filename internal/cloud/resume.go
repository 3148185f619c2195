package cloud

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// LastOffset returns the Holdfast-Last of the last message stored for nodeID
// in the JetStream stream (StreamEvents, StreamResults or StreamLedger), and
// ok=false if the stream holds nothing of that node. Messages of other nodes
// are never considered. See docs/format/cloud.md for how a node resumes from it.
func LastOffset(ctx context.Context, js jetstream.JetStream, nodeID, stream string) (off uint64, ok bool, err error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, false, fmt.Errorf("cloud: last offset of %s in %s: %w", nodeID, stream, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, NodeFilter(nodeID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("cloud: last offset of %s in %s: %w", nodeID, stream, err)
	}
	off, err = headerUint(m.Header, HeaderLast)
	if err != nil {
		return 0, false, fmt.Errorf("cloud: message %d on %s: %w", m.Sequence, m.Subject, err)
	}
	return off, true, nil
}

// Stored is a record found in the cloud: its offset and the stream sequence
// of the message that holds it.
type Stored struct {
	Offset uint64
	Seq    uint64
	Lane   string // the message's Holdfast-Lane
}

// StoredOffsets returns, in stream order, every record of nodeID stored in the
// stream in a message at a sequence after afterSeq. A resuming node uses it to
// find which of its unacknowledged records arrived anyway. A message that does
// not decode is an error: the node cannot tell what it holds.
func StoredOffsets(ctx context.Context, js jetstream.JetStream, nodeID, stream string, afterSeq uint64) ([]Stored, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("cloud: stored offsets of %s in %s: %w", nodeID, stream, err)
	}
	filter := NodeFilter(nodeID)
	var out []Stored
	for seq := afterSeq + 1; ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cloud: stored offsets of %s in %s at seq %d: %w", nodeID, stream, seq, err)
		}
		if out, err = appendStored(out, m); err != nil {
			return nil, err
		}
		seq = m.Sequence + 1
	}
}

// LastSubjectSeq returns the stream sequence of the last message on subject
// in the JetStream stream, 0 if the subject holds none. A node compares it
// with the sequence its publishes expect (docs/format/cloud.md, "Exactly
// once").
func LastSubjectSeq(ctx context.Context, js jetstream.JetStream, stream, subject string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("cloud: last sequence of %s in %s: %w", subject, stream, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cloud: last sequence of %s in %s: %w", subject, stream, err)
	}
	return m.Sequence, nil
}

// SubjectStored returns, in stream order, every record in a message on
// subject stored at a sequence after afterSeq and at most upToSeq. A message
// that does not decode is an error: the node cannot tell what it holds.
func SubjectStored(ctx context.Context, js jetstream.JetStream, stream, subject string, afterSeq, upToSeq uint64) ([]Stored, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("cloud: records on %s in %s: %w", subject, stream, err)
	}
	var out []Stored
	for seq := afterSeq + 1; seq <= upToSeq; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cloud: records on %s in %s at seq %d: %w", subject, stream, seq, err)
		}
		if m.Sequence > upToSeq {
			return out, nil
		}
		if out, err = appendStored(out, m); err != nil {
			return nil, err
		}
		seq = m.Sequence + 1
	}
	return out, nil
}

// appendStored appends the records of message m to out.
func appendStored(out []Stored, m *jetstream.RawStreamMsg) ([]Stored, error) {
	recs, err := DecodeBatch(m.Header, m.Data)
	if err != nil {
		return nil, fmt.Errorf("cloud: message %d on %s: %w", m.Sequence, m.Subject, err)
	}
	lane := m.Header.Get(HeaderLane)
	for _, r := range recs {
		out = append(out, Stored{Offset: r.Offset, Seq: m.Sequence, Lane: lane})
	}
	return out, nil
}
