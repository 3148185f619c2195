package uplink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// JetStreamOptions configure the JetStream sink.
type JetStreamOptions struct {
	URL string // nats://host:port of the cloud ingest
	// Links, when set, replace URL and Access: the ways to the cloud in
	// order of preference (links.go). The sink fails over from a link that
	// is down to the next, and back to a more preferred one once it answers.
	Links []Link
	// PreferredProbe is how often a sink on a less preferred link tries the
	// more preferred ones; default DefaultPreferredProbe.
	PreferredProbe time.Duration
	NodeID         string
	Name           string // sink name, default "cloud"
	// EnsureLayout creates the cloud layout if it is missing (a NATS cluster
	// that no `holdfast cloud` has set up). Default false: the layout is the
	// cloud's.
	EnsureLayout bool
	// NoCompress sends batch bodies as they are instead of as zstd frames.
	NoCompress bool
	// Access are the credentials and TLS settings for the cloud.
	Access cloud.Access
	Logger *slog.Logger
	// OnClock, if set, gets an estimate of the node's clock offset from the
	// cloud's at most every clockInterval, taken after a confirmed batch (clock.go).
	OnClock func(clock.Sample)

	// settleWait bounds how long a failed Send waits for its other
	// publishes; default defaultSettleWait. Tests shorten it.
	settleWait time.Duration
}

// JetStreamSink sends records to NATS JetStream as docs/format/cloud.md lays
// out: batches of one kind, stream and lane per message, zstd-compressed,
// each publish expecting the sequence of the last message on its subject that
// the sink has accounted for (Nats-Expected-Last-Subject-Sequence). A publish
// that lands late, after the sink gave up on it, either makes the sink's next
// publish on the subject fail, and the sink then looks at what the subject
// holds, or is itself refused: no record is stored twice, whatever the length
// of an outage. nats.go does the protocol, klauspost/compress the zstd.
type JetStreamSink struct {
	o  JetStreamOptions
	nc *nats.Conn
	js jetstream.JetStream

	harder atomic.Bool // compress harder: the buffer is filling (SetPressure)
	// reconnected is called when nats.go has reconnected (OnReconnect).
	reconnected atomic.Pointer[func()]
	inUse       atomic.Int32 // index of the link in use or last used; -1 before the first
	preferTried time.Time    // when preferBack last tried (syncer goroutine)
	probing     bool         // a background attempt runs (syncer goroutine)
	ready       chan dialed  // its result, cap 1
	bg          sync.WaitGroup
	bgCtx       context.Context
	bgCancel    context.CancelFunc

	// Used by the syncer's goroutine only.
	last  map[string]uint64   // subject → sequence of its last message accounted for
	saved map[string]uint64   // the positions saved with the cursors, as Resume got them
	lanes map[Lane]uint64     // the lane cursors as Resume got them
	skip  map[uint64]storedAt // records found stored, until their lane passes them
	batch cloud.Batch         // body under construction
	clock clockProbe          // the message to read the cloud's clock from (clock.go)
}

// storedAt is where a record was found stored.
type storedAt struct {
	subject string
	seq     uint64
	lane    Lane
}

// NewJetStreamSink returns a sink; it connects on the first Resume.
func NewJetStreamSink(o JetStreamOptions) *JetStreamSink {
	if o.Name == "" {
		o.Name = "cloud"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.settleWait == 0 {
		o.settleWait = defaultSettleWait
	}
	if len(o.Links) == 0 {
		o.Links = []Link{{URL: o.URL, Access: o.Access}}
	}
	if o.PreferredProbe <= 0 {
		o.PreferredProbe = DefaultPreferredProbe
	}
	s := &JetStreamSink{o: o, last: map[string]uint64{}, saved: map[string]uint64{}, skip: map[uint64]storedAt{},
		ready: make(chan dialed, 1)}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	s.inUse.Store(-1)
	return s
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

// OnReconnect sets what to call when nats.go has connected again after a
// disconnect (Reconnecter).
func (s *JetStreamSink) OnReconnect(f func()) { s.reconnected.Store(&f) }

// Probe reports whether the connection to the cloud is up (Prober); before
// the first connect, or once the connection is closed, it dials the cloud's
// host instead (with several links, any link's). Connected over a less
// preferred link, it first tries the more preferred ones (preferBack).
func (s *JetStreamSink) Probe(ctx context.Context) error {
	if nc := s.nc; nc != nil && !nc.IsClosed() {
		if nc.IsConnected() {
			s.preferBack(ctx)
			return nil
		}
		if len(s.o.Links) == 1 {
			return errors.New("not connected to the cloud")
		}
	}
	return s.probeLinks(ctx)
}

// connect dials the cloud once; nats.go reconnects by itself afterwards. The
// reconnect buffer is off, so a publish while disconnected fails at once
// instead of being replayed later out of the syncer's sight. With several
// links, a disconnected link is given up for the most preferred one that
// answers — but only when failover is allowed (Resume): a Send must not move
// to a metered link with a batch read for an unmetered one.
func (s *JetStreamSink) connect(ctx context.Context, failover bool) error {
	if s.nc != nil && !s.nc.IsClosed() {
		if s.nc.IsConnected() {
			return nil
		}
		if len(s.o.Links) == 1 || !failover {
			return errors.New("not connected to the cloud")
		}
	}
	if len(s.o.Links) > 1 {
		if !failover {
			return errors.New("not connected to the cloud")
		}
		return s.connectAny(ctx)
	}
	nc, js, err := s.dial(ctx, 0, 5*time.Second)
	if err != nil {
		return err
	}
	s.use(0, nc, js)
	return nil
}

// Resume takes the lane cursors and the positions saved with them as the
// truth: every subject's expected sequence goes back to its saved value (a
// batch confirmed but not saved is found again by looking), and records found
// stored whose lane has passed them are forgotten. Nothing is asked of the
// cloud up front: the next publish on each subject carries the check
// (docs/format/cloud.md, "Exactly once").
func (s *JetStreamSink) Resume(ctx context.Context, lanes map[Lane]uint64, saved map[string]uint64) error {
	if err := s.connect(ctx, true); err != nil {
		return err
	}
	s.lanes = maps.Clone(lanes)
	s.saved = maps.Clone(saved)
	clear(s.last)
	for off, at := range s.skip {
		if off < s.cursor(at.lane) {
			delete(s.skip, off) // its lane is past it
		}
	}
	return nil
}

// cursor is the lane cursor a record found in the cloud is compared with; a
// lane the syncer does not run counts as confirmed up to the smallest cursor.
func (s *JetStreamSink) cursor(l Lane) uint64 {
	if c, ok := s.lanes[l]; ok {
		return c
	}
	next := uint64(math.MaxUint64)
	for _, c := range s.lanes {
		next = min(next, c)
	}
	if len(s.lanes) == 0 {
		next = 0
	}
	return next
}

// positionKey is the name of a subject's saved position: a subject may be
// longer than a cursor name may be.
func positionKey(subject string) string {
	h := sha256.Sum256([]byte(subject))
	return "subj:" + hex.EncodeToString(h[:8])
}

// expected returns the sequence a publish on subject expects, looking at the
// subject first if the sink has no position for it.
func (s *JetStreamSink) expected(ctx context.Context, subject, stream string) (uint64, error) {
	if v, ok := s.last[subject]; ok {
		return v, nil
	}
	if v, ok := s.saved[positionKey(subject)]; ok {
		s.last[subject] = v
		return v, nil
	}
	// No position of its own: from the floor of its JetStream stream (saved
	// by recover and by nodes before per-subject positions), else from 0.
	if err := s.look(ctx, subject, stream, s.saved[stream], false); err != nil {
		return 0, err
	}
	return s.last[subject], nil
}

// look reads what subject holds after sequence from, marks every record in it
// at or above its lane's cursor found, and makes the subject's last message
// the one its publishes expect. onSubject says from is a sequence of the
// subject's (not a floor of its JetStream stream's): a last message below it
// then means the stream started its sequences over (deleted and created
// again), and the subject is read from its start.
func (s *JetStreamSink) look(ctx context.Context, subject, stream string, from uint64, onSubject bool) error {
	q, err := cloud.LastSubjectSeq(ctx, s.js, stream, subject)
	if err != nil {
		return err
	}
	if onSubject && q < from {
		from = 0
	}
	found := 0
	if q > from {
		stored, err := cloud.SubjectStored(ctx, s.js, stream, subject, from, q)
		if err != nil {
			return err
		}
		for _, st := range stored {
			lane, err := ParseLane(st.Lane)
			if err != nil {
				return fmt.Errorf("%s message %d: %w", subject, st.Seq, err)
			}
			if _, known := s.skip[st.Offset]; st.Offset >= s.cursor(lane) && !known {
				s.skip[st.Offset] = storedAt{subject, st.Seq, lane}
				found++
			}
		}
	}
	s.last[subject] = q
	if found > 0 {
		s.o.Logger.Info("records already in the cloud will not be sent again", "subject", subject, "records", found)
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

// maxLooks bounds how often one Send looks at a subject after a refused
// publish before it gives up and lets the syncer retry.
const maxLooks = 3

// Send publishes recs as batch messages, one or more per kind and stream, and
// returns nil once every record is confirmed by a PubAck or found stored.
// Messages on different subjects go out together, messages on one subject one
// after another: each expects the sequence of the one before.
func (s *JetStreamSink) Send(ctx context.Context, recs []Record) error {
	if err := s.connect(ctx, false); err != nil {
		return err
	}
	s.preferBack(ctx)
	for _, r := range recs {
		if s.Holds(r) {
			return fmt.Errorf("record %d: %w", r.Offset, ErrHeld)
		}
	}
	s.batch.Reset() // a failed Send may have left a body half built
	var (
		groups []*subjectGroup
		index  = map[string]*subjectGroup{}
	)
	for _, r := range recs {
		kind := kindOf(r.Type)
		if kind == "" {
			continue
		}
		subject := cloud.Subject(s.o.NodeID, kind, r.Stream)
		g := index[subject]
		if g == nil {
			g = &subjectGroup{kind: kind, stream: r.Stream, subject: subject, jsStream: cloud.StreamFor(kind)}
			index[subject] = g
			groups = append(groups, g)
		}
		g.recs = append(g.recs, r)
	}
	// acked are the messages of this Send confirmed so far: if the Send
	// fails, their records are found stored.
	var acked []sent
	fail := func(err error, round []sent) error {
		acked = append(acked, s.settle(round)...)
		for _, m := range acked {
			for _, r := range m.recs {
				s.skip[r.Offset] = storedAt{m.subject, m.seq, r.Lane}
			}
		}
		return err
	}
	for {
		var round []sent
		for _, g := range groups {
			g.drop(s.skip)
			if len(g.recs) == 0 {
				continue
			}
			exp, err := s.expected(ctx, g.subject, g.jsStream)
			if err != nil {
				return fail(err, round)
			}
			g.drop(s.skip) // looking may have found some
			if len(g.recs) == 0 {
				continue
			}
			n := 0
			for _, r := range g.recs {
				if s.batch.Count > 0 && len(s.batch.Body)+len(r.Payload)+20 > cloud.MaxBatchBody {
					break
				}
				s.batch.Append(r.Offset, r.Payload)
				n++
			}
			m := cloud.BatchMsgCompressed(s.o.NodeID, g.kind, g.stream, g.recs[0].Lane.String(), &s.batch, s.compression())
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(exp, 10))
			first, last := s.batch.First, s.batch.Last
			s.batch.Reset()
			at := time.Now()
			fut, err := s.js.PublishMsgAsync(m)
			if err != nil {
				return fail(fmt.Errorf("publish records %d-%d: %w", first, last, err), round)
			}
			round = append(round, sent{g: g, subject: g.subject, recs: slices.Clone(g.recs[:n]), fut: fut, exp: exp, at: at})
		}
		if len(round) == 0 {
			break
		}
		for i, p := range round {
			select {
			case ack := <-p.fut.Ok():
				round[i].fut = nil
				s.clock.note(round[i].at, ack)
				s.acked(&round[i], ack)
				acked = append(acked, round[i])
				p.g.recs = p.g.recs[len(p.recs):]
			case err := <-p.fut.Err():
				round[i].fut = nil
				if !isWrongLastSequence(err) {
					return fail(fmt.Errorf("batch from record %d not confirmed: %w", p.recs[0].Offset, err), round)
				}
				// Something of ours landed on the subject since we last
				// accounted for it: look, then send what is still missing.
				if p.g.looks++; p.g.looks > maxLooks {
					return fail(fmt.Errorf("%s: the stored sequence keeps changing: %w", p.subject, err), round)
				}
				if err := s.look(ctx, p.subject, p.g.jsStream, s.last[p.subject], true); err != nil {
					return fail(err, round)
				}
			case <-ctx.Done():
				return fail(fmt.Errorf("waiting for the cloud's acknowledgements: %w", ctx.Err()), round)
			}
		}
	}
	// Records sent ahead of a held one of their lane stay found until the
	// lane's cursor passes them; the others are confirmed.
	for _, m := range acked {
		for _, r := range m.recs {
			if r.Ahead {
				s.skip[r.Offset] = storedAt{m.subject, m.seq, r.Lane}
			}
		}
	}
	for _, r := range recs {
		if !r.Ahead {
			delete(s.skip, r.Offset)
		}
	}
	s.measureClock()
	return nil
}

// ErrHeld: a record was given to a sink that holds it back (Holder); the
// syncer retries once the link has changed.
var ErrHeld = errors.New("uplink: record held for an unmetered link")

// subjectGroup is what one Send has to publish on one subject.
type subjectGroup struct {
	kind, stream      string
	subject, jsStream string
	recs              []Record // not yet confirmed, in offset order
	looks             int
}

// drop removes the records found stored from the front and the rest of g.
func (g *subjectGroup) drop(skip map[uint64]storedAt) {
	out := g.recs[:0]
	for _, r := range g.recs {
		if _, ok := skip[r.Offset]; !ok {
			out = append(out, r)
		}
	}
	g.recs = out
}

// sent is one published message of a Send.
type sent struct {
	g       *subjectGroup
	subject string
	recs    []Record
	fut     jetstream.PubAckFuture // nil once answered
	exp     uint64                 // the sequence it expected
	seq     uint64                 // where its records are found (acked)
	at      time.Time              // when it was published
}

// acked accounts for the PubAck of message p: p is the subject's last
// message accounted for. Not so a duplicate: a clustered stream checks the
// de-duplication window before the expected sequence, so a retried message
// is answered with its first copy's sequence whatever it expected, and what
// is stored between the two is not accounted for. The expected sequence then
// stays, the next publish on the subject looks, and should the Send fail,
// p's records count as found just after the sequence p expected, so that the
// saved position does not pass what lies between.
func (s *JetStreamSink) acked(p *sent, ack *jetstream.PubAck) {
	p.seq = ack.Sequence
	if ack.Duplicate {
		p.seq = min(ack.Sequence, p.exp+1)
		return
	}
	s.last[p.subject] = ack.Sequence
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// defaultSettleWait bounds how long a failed Send waits for its other publishes.
const defaultSettleWait = 5 * time.Second

// settle is called when a Send fails with publishes of round perhaps still
// unanswered. It waits for them, so that their PubAcks count, and returns
// those confirmed. If some stay unanswered it drops the connection: they may
// still be stored later, which the expected sequences make harmless (the
// sink's next publish on the subject is refused and looks, or theirs is
// refused), but their futures would otherwise linger.
func (s *JetStreamSink) settle(round []sent) []sent {
	select {
	case <-s.js.PublishAsyncComplete():
	case <-time.After(s.o.settleWait):
		s.o.Logger.Warn("publishes still unanswered after a failed batch; reconnecting")
		s.nc.Close()
		s.nc = nil
	}
	var ok []sent
	for _, p := range round {
		if p.fut == nil {
			continue
		}
		select {
		case ack := <-p.fut.Ok():
			s.acked(&p, ack)
			ok = append(ok, p)
		default:
		}
	}
	return ok
}

// Positions are the subjects' expected sequences to save with the lane
// cursors, each never above the sequence just before a message holding a
// record found stored that its lane has not passed yet, so that a restart
// looks again and finds it again.
func (s *JetStreamSink) Positions() map[string]uint64 {
	out := make(map[string]uint64, len(s.last))
	for subject, v := range s.last {
		out[positionKey(subject)] = v
	}
	for _, at := range s.skip {
		k := positionKey(at.subject)
		if v, ok := out[k]; !ok || at.seq-1 < v {
			out[k] = at.seq - 1
		}
	}
	return out
}

func (s *JetStreamSink) Close() error {
	s.stopProbe()
	if s.nc != nil {
		s.nc.Close()
	}
	return nil
}
