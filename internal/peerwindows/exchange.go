package peerwindows

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/holdfast-edge/holdfast/internal/window"
)

// replyBudget bounds the partials of one reply, well below the member link's
// 8 MiB maximum payload.
const replyBudget = 4 << 20

// serveTimeout bounds how long a node works on one request; the asking node
// has long given up by then.
const serveTimeout = 10 * time.Second

// Reply header (docs/format/peer-windows.md).
const (
	replyVersion = 1
	replyOK      = 0
	replyError   = 1
	replyMore    = 1 << 0
)

// request is a Query on the wire.
type request struct {
	Stream   string   `json:"stream,omitempty"`
	DeviceID string   `json:"device_id,omitempty"`
	SizeMS   int64    `json:"size_ms,omitempty"`
	From     *int64   `json:"from,omitempty"`
	To       *int64   `json:"to,omitempty"`
	After    *wireKey `json:"after,omitempty"`
	Limit    int      `json:"limit"`
}

type wireKey struct {
	Stream   string `json:"stream"`
	DeviceID string `json:"device_id,omitempty"`
	SizeMS   int64  `json:"size_ms"`
	Start    int64  `json:"start"`
}

func encodeRequest(q Query) ([]byte, error) {
	r := request{Stream: q.Stream, DeviceID: q.DeviceID, SizeMS: q.Size.Milliseconds(), Limit: q.Limit}
	if q.From != math.MinInt64 {
		r.From = &q.From
	}
	if q.To != math.MaxInt64 {
		r.To = &q.To
	}
	if k := q.After; k != nil {
		r.After = &wireKey{Stream: k.Stream, DeviceID: k.DeviceID, SizeMS: k.Size.Milliseconds(), Start: k.Start}
	}
	return json.Marshal(r)
}

func decodeRequest(b []byte) (Query, error) {
	var r request
	if err := json.Unmarshal(b, &r); err != nil {
		return Query{}, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	if r.SizeMS < 0 || r.SizeMS > math.MaxInt64/int64(time.Millisecond) {
		return Query{}, fmt.Errorf("%w: size_ms %d", ErrQuery, r.SizeMS)
	}
	q := Query{Stream: r.Stream, DeviceID: r.DeviceID, Size: time.Duration(r.SizeMS) * time.Millisecond,
		From: math.MinInt64, To: math.MaxInt64, Limit: r.Limit}
	if r.From != nil {
		q.From = *r.From
	}
	if r.To != nil {
		q.To = *r.To
	}
	if k := r.After; k != nil {
		if k.SizeMS <= 0 || k.SizeMS > math.MaxInt64/int64(time.Millisecond) {
			return Query{}, fmt.Errorf("%w: after.size_ms %d", ErrQuery, k.SizeMS)
		}
		q.After = &window.Key{Stream: k.Stream, DeviceID: k.DeviceID, Size: time.Duration(k.SizeMS) * time.Millisecond, Start: k.Start}
	}
	return q, q.Validate()
}

// encodeReply encodes a page, cutting it where the next partial would pass
// budget bytes; at least one partial goes out, or an error if that one alone
// does not fit.
func encodeReply(pg Page, budget int) ([]byte, error) {
	body := make([]byte, 0, 256)
	n, more := 0, pg.More
	var part []byte
	for i := range pg.Partials {
		part = pg.Partials[i].AppendBinary(part[:0])
		if len(body)+len(part)+binary.MaxVarintLen64 > budget {
			if n == 0 {
				return nil, fmt.Errorf("window %v: partial of %d bytes passes the reply budget of %d", pg.Partials[i].Key, len(part), budget)
			}
			more = true
			break
		}
		body = binary.AppendUvarint(body, uint64(len(part)))
		body = append(body, part...)
		n++
	}
	var flags byte
	if more {
		flags |= replyMore
	}
	out := append(make([]byte, 0, 3+binary.MaxVarintLen64+len(body)), replyVersion, replyOK, flags)
	out = binary.AppendUvarint(out, uint64(n))
	return append(out, body...), nil
}

func encodeError(err error) []byte {
	msg := err.Error()
	out := append([]byte{replyVersion, replyError}, binary.AppendUvarint(nil, uint64(len(msg)))...)
	return append(out, msg...)
}

// decodeReply decodes a reply to q, checking that it answers q: windows q
// selects, after its cursor, keys strictly ascending, at most q.Limit.
func decodeReply(b []byte, q Query) (Page, error) {
	bad := func(format string, args ...any) (Page, error) {
		return Page{}, fmt.Errorf("%w: bad reply: %s", ErrPeer, fmt.Sprintf(format, args...))
	}
	if len(b) < 2 || b[0] != replyVersion {
		return bad("unknown version")
	}
	if b[1] == replyError {
		n, k := binary.Uvarint(b[2:])
		if k <= 0 || n != uint64(len(b)-2-k) {
			return bad("error message length")
		}
		return Page{}, fmt.Errorf("%w: %s", ErrPeer, b[2+k:])
	}
	if b[1] != replyOK || len(b) < 3 || b[2]&^replyMore != 0 {
		return bad("unknown status or flags")
	}
	pg := Page{More: b[2]&replyMore != 0}
	b = b[3:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(q.Limit) || n > uint64(len(b)) {
		return bad("partial count")
	}
	b = b[k:]
	pg.Partials = make([]window.Partial, 0, n)
	for i := range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return bad("partial %d: length", i)
		}
		p, err := window.DecodePartial(b[k : k+int(l)])
		if err != nil {
			return bad("partial %d: %v", i, err)
		}
		b = b[k+int(l):]
		if !q.matches(p.Key) || !q.after(p.Key) {
			return bad("window %v not asked for", p.Key)
		}
		if i > 0 && window.CompareKeys(pg.Partials[i-1].Key, p.Key) >= 0 {
			return bad("windows out of order")
		}
		pg.Partials = append(pg.Partials, p)
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	if pg.More && len(pg.Partials) == 0 {
		return bad("more windows but none answered")
	}
	return pg, nil
}

// Serve answers requests on subject with src's partials, until stop, which
// waits for a request in progress. nc's maximum payload, if below the
// reply budget, bounds the replies.
func Serve(nc *nats.Conn, subject string, src Source) (stop func(), err error) {
	var mu sync.Mutex // held while a request is answered
	stopped := false
	budget := replyBudget
	if mp := int(nc.MaxPayload()); mp > 0 && mp-1024 < budget {
		budget = mp - 1024
	}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = m.Respond(answer(m.Data, src, budget))
	})
	if err != nil {
		return nil, fmt.Errorf("peerwindows: subscribe %s: %w", subject, err)
	}
	return func() {
		_ = sub.Unsubscribe()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}, nil
}

func answer(req []byte, src Source, budget int) []byte {
	q, err := decodeRequest(req)
	if err != nil {
		return encodeError(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), serveTimeout)
	defer cancel()
	pg, err := src.Partials(ctx, q)
	if err != nil {
		return encodeError(err)
	}
	out, err := encodeReply(pg, budget)
	if err != nil {
		return encodeError(err)
	}
	return out
}

// Fetch asks the node serving subject for its page of q and waits for it
// until ctx ends. A node not there fails at once (nats.ErrNoResponders);
// errors the node answered wrap ErrPeer.
func Fetch(ctx context.Context, nc *nats.Conn, subject string, q Query) (Page, error) {
	if err := q.Validate(); err != nil {
		return Page{}, err
	}
	req, err := encodeRequest(q)
	if err != nil {
		return Page{}, err
	}
	m, err := nc.RequestWithContext(ctx, subject, req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return Page{}, fmt.Errorf("peerwindows: no answer on %s: %w", subject, err)
		}
		return Page{}, fmt.Errorf("peerwindows: request %s: %w", subject, err)
	}
	return decodeReply(m.Data, q)
}
