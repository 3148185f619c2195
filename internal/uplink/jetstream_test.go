package uplink

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

func eventRecord(off uint64, stream string, lane Lane) Record {
	e := event.Event{DeviceID: "d", Stream: stream, TS: int64(1_700_000_000_000 + off)}
	return Record{Offset: off, Type: event.TypeEvent, Stream: stream, Lane: lane, Payload: e.AppendBinary(nil)}
}

// TestFoundRecordsStayFound: a critical record the cloud holds although its
// PubAck never came is found by the restarted sink: its publish on the subject
// is refused, and it looks.
func TestFoundRecordsStayFound(t *testing.T) {
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer srv.Close()
	ctx := context.Background()

	a := NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "n1"})
	require.NoError(t, a.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneNormal: 0}, nil))
	require.NoError(t, a.Send(ctx, []Record{eventRecord(0, "door", LaneCritical), eventRecord(3, "door", LaneCritical)}))
	saved := a.Positions()

	// Record 5 reached the cloud, its PubAck did not reach the node.
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var b cloud.Batch
	b.Append(5, eventRecord(5, "door", LaneCritical).Payload)
	_, err = js.PublishMsg(ctx, cloud.BatchMsg("n1", cloud.KindEvents, "door", "critical", &b, true))
	require.NoError(t, err)

	// Lane cursors: critical at 4, normal at 1.
	require.NoError(t, a.Resume(ctx, map[Lane]uint64{LaneCritical: 4, LaneNormal: 1}, saved))
	require.NoError(t, a.Send(ctx, []Record{eventRecord(1, "temp", LaneNormal), eventRecord(2, "temp", LaneNormal),
		eventRecord(6, "temp", LaneNormal)}))
	saved = a.Positions()
	require.NoError(t, a.Close())

	// Restart: critical at 4, normal at 7.
	b2 := NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "n1"})
	require.NoError(t, b2.Resume(ctx, map[Lane]uint64{LaneCritical: 4, LaneNormal: 7}, saved))
	require.NoError(t, b2.Send(ctx, []Record{eventRecord(5, "door", LaneCritical), eventRecord(8, "door", LaneCritical)}))
	require.NoError(t, b2.Close())

	stored, err := cloud.StoredOffsets(ctx, js, "n1", cloud.StreamEvents, 0)
	require.NoError(t, err)
	count := map[uint64]int{}
	for _, s := range stored {
		count[s.Offset]++
	}
	require.Equal(t, map[uint64]int{0: 1, 1: 1, 2: 1, 3: 1, 5: 1, 6: 1, 8: 1}, count)
}

// TestBacklogReachesCloudCriticalFirst: a backlog built while the cloud is
// away, critical "door" events spread through normal ones, drains to JetStream
// with every critical record stored before any normal one, each lane in offset
// order, and every record once.
func TestBacklogReachesCloudCriticalFirst(t *testing.T) {
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	defer srv.Close()
	l, err := buffer.Open(buffer.Options{Dir: t.TempDir()})
	require.NoError(t, err)
	defer l.Close()
	var ps [][]byte
	critical := map[uint64]bool{}
	for i := range 20000 {
		stream := "temp"
		if i%50 == 7 {
			stream = "door"
			critical[uint64(i)] = true
		}
		e := event.Event{DeviceID: fmt.Sprint("d", i%9), Stream: stream, TS: int64(1_700_000_000_000 + i), Value: float64(i)}
		ps = append(ps, e.AppendBinary(nil))
	}
	_, err = l.Append(ps...)
	require.NoError(t, err)
	// Every other kind of record goes to HOLDFAST_RESULTS.
	win := event.WindowRecord{Stream: "temp", DeviceID: "d1", SizeMS: 1000, Start: 1_700_000_000_000, Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1}
	alert := event.AlertRecord{Rule: "r", Severity: "critical", Firing: true, Stream: "door", FiredAt: 1_700_000_000_000}
	wm := event.WatermarkRecord{Stream: "temp", Watermark: 1_700_000_000_000}
	others, err := l.Append(win.AppendBinary(nil), alert.AppendBinary(nil), wm.AppendBinary(nil), event.AppendLate(nil, []uint64{3, 9}))
	require.NoError(t, err)
	rules, err := FixedLanes(map[string]string{"door": "critical"})
	require.NoError(t, err)
	s := NewSyncer(l, NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "n1"}),
		SyncOptions{BatchRecords: 500, Lanes: rules})
	s.Start()
	waitSynced(t, s, l)
	require.NoError(t, s.Close())

	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	results, err := cloud.StoredOffsets(context.Background(), js, "n1", cloud.StreamResults, 0)
	require.NoError(t, err)
	require.Len(t, results, 4, "window, alert, watermark and late marks")
	require.Equal(t, others+1, results[0].Offset, "the critical alert first")
	stored, err := cloud.StoredOffsets(context.Background(), js, "n1", cloud.StreamEvents, 0)
	require.NoError(t, err)
	require.Len(t, stored, len(ps), "every record once")
	seen := map[uint64]bool{}
	for i, st := range stored {
		require.False(t, seen[st.Offset], "offset %d twice", st.Offset)
		seen[st.Offset] = true
		require.Equal(t, i < len(critical), critical[st.Offset], "record %d in stream order is offset %d", i, st.Offset)
		if i > 0 && critical[stored[i-1].Offset] == critical[st.Offset] {
			require.Greater(t, st.Offset, stored[i-1].Offset, "lane order")
		}
	}
}

// TestPartlyConfirmedBatchIsNotSentTwice: a batch's event message is stored
// and acknowledged, its window message fails (no stream takes it). The resume
// after the failure must find the event, long after the de-duplication window,
// so the retry stores it no second time.
func TestPartlyConfirmedBatchIsNotSentTwice(t *testing.T) {
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0",
		Duplicates: 100 * time.Millisecond})
	require.NoError(t, err)
	defer srv.Close()
	ctx := context.Background()
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	win := event.WindowRecord{Stream: "temp", DeviceID: "d", SizeMS: 1000, Start: 1_700_000_000_000, Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1}
	batch := []Record{eventRecord(0, "temp", LaneNormal),
		{Offset: 1, Type: event.TypeWindow, Stream: "temp", Lane: LaneNormal, Payload: win.AppendBinary(nil)}}
	lanes := map[Lane]uint64{LaneNormal: 0}

	s := NewJetStreamSink(JetStreamOptions{URL: srv.URL(), NodeID: "n1"})
	defer s.Close()
	require.NoError(t, s.Resume(ctx, lanes, nil))
	require.NoError(t, js.DeleteStream(ctx, cloud.StreamResults))
	require.Error(t, s.Send(ctx, batch), "the window has no stream to go to")
	saved := s.Positions()

	time.Sleep(300 * time.Millisecond) // past the de-duplication window
	require.NoError(t, cloud.EnsureLayout(ctx, js, cloud.LayoutOptions{Duplicates: 100 * time.Millisecond}))
	require.NoError(t, s.Resume(ctx, lanes, saved))
	require.NoError(t, s.Send(ctx, batch))

	events, err := cloud.StoredOffsets(ctx, js, "n1", cloud.StreamEvents, 0)
	require.NoError(t, err)
	require.Len(t, events, 1, "the event once: %v", events)
	results, err := cloud.StoredOffsets(ctx, js, "n1", cloud.StreamResults, 0)
	require.NoError(t, err)
	require.Len(t, results, 1)
}

// testCloud starts a cloud for the test and returns its URL and a client.
func testCloud(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	srv, err := cloud.Start(cloud.Options{DataDir: filepath.Join(t.TempDir(), "cloud"), Listen: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Close() })
	nc, err := nats.Connect(srv.URL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return srv.URL(), js
}

// storedCounts returns how often each record of node n1 is stored in
// HOLDFAST_EVENTS.
func storedCounts(ctx context.Context, t *testing.T, js jetstream.JetStream) map[uint64]int {
	t.Helper()
	stored, err := cloud.StoredOffsets(ctx, js, "n1", cloud.StreamEvents, 0)
	require.NoError(t, err)
	count := map[uint64]int{}
	for _, st := range stored {
		count[st.Offset]++
	}
	return count
}

// TestLargeBatchOnOneSubject: a batch too large for one message goes out as
// several on one subject, each expecting the one before; with another
// subject's message alongside, every record is stored once, and a restarted
// sink carries on from the saved positions.
func TestLargeBatchOnOneSubject(t *testing.T) {
	url, js := testCloud(t)
	ctx := context.Background()

	big := func(off uint64) Record {
		r := eventRecord(off, "cam", LaneNormal)
		r.Payload = append(r.Payload, make([]byte, 200<<10)...)
		return r
	}
	var batch []Record
	for off := range uint64(7) {
		if off == 3 {
			batch = append(batch, eventRecord(off, "temp", LaneNormal))
			continue
		}
		batch = append(batch, big(off))
	}
	s := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 0}, nil))
	require.NoError(t, s.Send(ctx, batch))
	saved := s.Positions()
	require.NoError(t, s.Close())

	s2 := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	defer s2.Close()
	require.NoError(t, s2.Resume(ctx, map[Lane]uint64{LaneNormal: 7}, saved))
	require.NoError(t, s2.Send(ctx, []Record{big(7), eventRecord(8, "temp", LaneNormal)}))

	stored, err := cloud.StoredOffsets(ctx, js, "n1", cloud.StreamEvents, 0)
	require.NoError(t, err)
	msgs, count := map[uint64]bool{}, map[uint64]int{}
	for _, st := range stored {
		msgs[st.Seq] = true
		count[st.Offset]++
	}
	require.Equal(t, map[uint64]int{0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1, 8: 1}, storedCounts(ctx, t, js))
	require.Len(t, msgs, 3+1+2, "cam in three messages of two records, temp in one; then one each")
}

// TestUnsavedBatchIsFoundAgain: a batch the cloud confirmed but whose cursors
// the log failed to save is resumed from the saved positions: the retry, cut
// into another batch (another Nats-Msg-Id), must find the confirmed records
// in the cloud instead of trusting what the sink remembers of them.
func TestUnsavedBatchIsFoundAgain(t *testing.T) {
	url, js := testCloud(t)
	ctx := context.Background()

	s := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	defer s.Close()
	require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 1}, nil))
	require.NoError(t, s.Send(ctx, []Record{eventRecord(1, "temp", LaneNormal)}))
	saved := s.Positions()
	require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 2}, saved))
	require.NoError(t, s.Send(ctx, []Record{eventRecord(2, "temp", LaneNormal), eventRecord(3, "temp", LaneNormal)}))
	// Saving the cursors failed: the syncer resumes from what the log holds.
	require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 2}, saved))
	require.NoError(t, s.Send(ctx, []Record{eventRecord(2, "temp", LaneNormal), eventRecord(3, "temp", LaneNormal),
		eventRecord(4, "temp", LaneNormal)}))

	require.Equal(t, map[uint64]int{1: 1, 2: 1, 3: 1, 4: 1}, storedCounts(ctx, t, js))
}

// TestFoundRecordsStayFoundAcrossLanes: a normal batch on a subject that also
// holds critical records finds a critical record stored although its PubAck
// never came, and moves the subject's sequence past it; the node restarts
// before the critical lane reaches the record. The positions saved with the
// normal batch must still make the critical lane look, or it would send the
// record twice.
func TestFoundRecordsStayFoundAcrossLanes(t *testing.T) {
	url, js := testCloud(t)
	ctx := context.Background()

	storedUnacked(t, js, 5) // record 5 (critical) reached the cloud, its PubAck did not reach the node

	a := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	require.NoError(t, a.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneNormal: 0}, nil))
	require.NoError(t, a.Send(ctx, []Record{eventRecord(1, "door", LaneNormal), eventRecord(6, "door", LaneNormal)}))
	saved := a.Positions()
	require.NoError(t, a.Close())

	b2 := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	defer b2.Close()
	require.NoError(t, b2.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneNormal: 7}, saved))
	require.NoError(t, b2.Send(ctx, []Record{eventRecord(0, "door", LaneCritical), eventRecord(5, "door", LaneCritical),
		eventRecord(8, "door", LaneCritical)}))

	require.Equal(t, map[uint64]int{0: 1, 1: 1, 5: 1, 6: 1, 8: 1}, storedCounts(ctx, t, js))
}

// clusterOrderJS answers a publish whose Nats-Msg-Id it has seen stored as a
// duplicate before the expected-sequence check, as a clustered stream does
// (nats-server checks the de-duplication window first in
// checkMsgHeadersPreClusteredProposal; a single server checks the expected
// sequence first).
type clusterOrderJS struct {
	jetstream.JetStream
	ids  map[string]uint64 // Nats-Msg-Id → sequence stored at
	fail string            // a subject whose publishes time out
}

func (c *clusterOrderJS) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f := &doneFuture{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	if m.Subject == c.fail {
		f.err <- nats.ErrTimeout
		return f, nil
	}
	id := m.Header.Get(jetstream.MsgIDHeader)
	if seq, ok := c.ids[id]; ok {
		f.ok <- &jetstream.PubAck{Stream: cloud.StreamEvents, Sequence: seq, Duplicate: true}
		return f, nil
	}
	ack, err := c.PublishMsg(context.Background(), m)
	if err != nil {
		f.err <- err
		return f, nil
	}
	c.ids[id] = ack.Sequence
	f.ok <- ack
	return f, nil
}

type doneFuture struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (f *doneFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *doneFuture) Err() <-chan error            { return f.err }
func (f *doneFuture) Msg() *nats.Msg               { return f.msg }

// TestDuplicateAckKeepsFoundRecordsFound: on a cluster a retried publish
// whose Nats-Msg-Id is still in the de-duplication window is answered
// "duplicate" with the first copy's sequence, whatever sequence it expected.
// That sequence says nothing of the messages between the expected one and it:
// a critical record found there before a restart must still be found after,
// or it is sent twice.
func TestDuplicateAckKeepsFoundRecordsFound(t *testing.T) {
	url, js := testCloud(t)
	ctx := context.Background()
	ids := map[string]uint64{}

	storedUnacked(t, js, 5) // record 5 (critical) reached the cloud, its PubAck did not reach the node

	a := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	require.NoError(t, a.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneNormal: 0}, nil))
	a.js = &clusterOrderJS{JetStream: a.js, ids: ids}
	require.NoError(t, a.Send(ctx, []Record{eventRecord(1, "door", LaneNormal), eventRecord(6, "door", LaneNormal)}))
	saved := a.Positions()
	require.NoError(t, a.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneNormal: 7}, saved))
	require.NoError(t, a.Send(ctx, []Record{eventRecord(7, "door", LaneNormal)}))
	// The node stops before saving the cursors of record 7.
	require.NoError(t, a.Close())

	c := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	defer c.Close()
	require.NoError(t, c.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneNormal: 7}, saved))
	c.js = &clusterOrderJS{JetStream: c.js, ids: ids}
	require.NoError(t, c.Send(ctx, []Record{eventRecord(7, "door", LaneNormal)}))
	require.NoError(t, c.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneNormal: 8}, c.Positions()))
	require.NoError(t, c.Send(ctx, []Record{eventRecord(0, "door", LaneCritical), eventRecord(5, "door", LaneCritical),
		eventRecord(8, "door", LaneCritical)}))

	require.Equal(t, map[uint64]int{0: 1, 1: 1, 5: 1, 6: 1, 7: 1, 8: 1}, storedCounts(ctx, t, js))
}

// TestRecreatedStreamIsLookedAtFromTheStart: an operator deletes the events
// stream and it is created again, its sequences starting over. A batch the
// new stream confirmed but whose cursors were not saved sits below the
// subject's saved sequence (from the old stream): looking must read the
// subject from its start to find it, or it is sent twice.
func TestRecreatedStreamIsLookedAtFromTheStart(t *testing.T) {
	url, js := testCloud(t)
	ctx := context.Background()

	s := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	defer s.Close()
	require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 0}, nil))
	for off := range uint64(3) {
		require.NoError(t, s.Send(ctx, []Record{eventRecord(off, "temp", LaneNormal)}))
	}
	saved := s.Positions()

	require.NoError(t, js.DeleteStream(ctx, cloud.StreamEvents))
	require.NoError(t, cloud.EnsureLayout(ctx, js, cloud.LayoutOptions{}))
	require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 3}, saved))
	require.NoError(t, s.Send(ctx, []Record{eventRecord(3, "temp", LaneNormal)}))
	// Saving the cursors failed: the syncer resumes from what the log holds.
	require.NoError(t, s.Resume(ctx, map[Lane]uint64{LaneNormal: 3}, saved))
	require.NoError(t, s.Send(ctx, []Record{eventRecord(3, "temp", LaneNormal), eventRecord(4, "temp", LaneNormal)}))

	require.Equal(t, map[uint64]int{3: 1, 4: 1}, storedCounts(ctx, t, js))
}

// TestDuplicateAckInFailedBatch: as TestDuplicateAckKeepsFoundRecordsFound,
// but the batch whose retry is answered "duplicate" fails on another subject.
// Its records are found where the first copy is; the position saved for the
// subject must still lie below the critical record found before the restart.
func TestDuplicateAckInFailedBatch(t *testing.T) {
	url, js := testCloud(t)
	ctx := context.Background()
	ids := map[string]uint64{}

	storedUnacked(t, js, 5) // record 5 (critical) reached the cloud, its PubAck did not reach the node

	a := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	require.NoError(t, a.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneHigh: 9, LaneNormal: 0}, nil))
	a.js = &clusterOrderJS{JetStream: a.js, ids: ids}
	require.NoError(t, a.Send(ctx, []Record{eventRecord(1, "door", LaneNormal), eventRecord(6, "door", LaneNormal)}))
	saved := a.Positions()
	require.NoError(t, a.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneHigh: 9, LaneNormal: 7}, saved))
	require.NoError(t, a.Send(ctx, []Record{eventRecord(7, "door", LaneNormal)}))
	// The node stops before saving the cursors of record 7.
	require.NoError(t, a.Close())

	c := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1", settleWait: 100 * time.Millisecond})
	require.NoError(t, c.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneHigh: 9, LaneNormal: 7}, saved))
	c.js = &clusterOrderJS{JetStream: c.js, ids: ids, fail: cloud.Subject("n1", cloud.KindEvents, "hum")}
	require.Error(t, c.Send(ctx, []Record{eventRecord(7, "door", LaneNormal), eventRecord(8, "hum", LaneNormal)}))
	require.NoError(t, c.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneHigh: 9, LaneNormal: 7}, saved))
	require.NoError(t, c.Send(ctx, []Record{eventRecord(9, "fan", LaneHigh)}))
	maps.Copy(saved, c.Positions()) // saved with the high lane's cursor
	require.NoError(t, c.Close())

	d := NewJetStreamSink(JetStreamOptions{URL: url, NodeID: "n1"})
	defer d.Close()
	require.NoError(t, d.Resume(ctx, map[Lane]uint64{LaneCritical: 0, LaneHigh: 10, LaneNormal: 7}, saved))
	require.NoError(t, d.Send(ctx, []Record{eventRecord(0, "door", LaneCritical), eventRecord(5, "door", LaneCritical),
		eventRecord(10, "door", LaneCritical)}))

	require.Equal(t, map[uint64]int{0: 1, 1: 1, 5: 1, 6: 1, 7: 1, 9: 1, 10: 1}, storedCounts(ctx, t, js))
}

// storedUnacked stores critical event record off on n1's door subject, as a
// publish whose PubAck never reached the node.
func storedUnacked(t *testing.T, js jetstream.JetStream, off uint64) {
	t.Helper()
	var b cloud.Batch
	b.Append(off, eventRecord(off, "door", LaneCritical).Payload)
	_, err := js.PublishMsg(context.Background(), cloud.BatchMsg("n1", cloud.KindEvents, "door", "critical", &b, true))
	require.NoError(t, err)
}
