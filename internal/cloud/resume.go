package cloud

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// LastOffset returns the Holdfast-Offset of the last message stored for nodeID
// in the JetStream stream (StreamEvents, StreamResults or StreamLedger), and
// ok=false if the stream holds nothing of that node. Messages of other nodes
// are never considered. See docs/format/cloud.md for how a node resumes from it.
func LastOffset(ctx context.Context, js jetstream.JetStream, nodeID, stream string) (off uint64, ok bool, err error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, false, fmt.Errorf("cloud: last offset of %s in %s: %w", nodeID, stream, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, nodeFilter(nodeID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("cloud: last offset of %s in %s: %w", nodeID, stream, err)
	}
	off, err = msgOffset(m)
	if err != nil {
		return 0, false, err
	}
	return off, true, nil
}

// StoredOffsets returns, in stream order, the Holdfast-Offset of every message
// of nodeID stored in the stream at a sequence after afterSeq. A resuming node
// uses it to find which of its unacknowledged records arrived anyway.
func StoredOffsets(ctx context.Context, js jetstream.JetStream, nodeID, stream string, afterSeq uint64) ([]uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("cloud: stored offsets of %s in %s: %w", nodeID, stream, err)
	}
	filter := nodeFilter(nodeID)
	var offs []uint64
	for seq := afterSeq + 1; ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return offs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("cloud: stored offsets of %s in %s at seq %d: %w", nodeID, stream, seq, err)
		}
		off, err := msgOffset(m)
		if err != nil {
			return nil, err
		}
		offs = append(offs, off)
		seq = m.Sequence + 1
	}
}

func msgOffset(m *jetstream.RawStreamMsg) (uint64, error) {
	v := m.Header.Get(HeaderOffset)
	off, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cloud: message %d on %s: bad %s %q", m.Sequence, m.Subject, HeaderOffset, v)
	}
	return off, nil
}
