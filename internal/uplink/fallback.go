package uplink

import (
	"context"
	"log/slog"
	"maps"
	"time"
)

// Primary is what a FallbackSink watches of the sink it stands in for: a
// Syncer.
type Primary interface {
	// LaneCursors gives each lane's cursor: every record of the lane below
	// it is confirmed by the primary sink.
	LaneCursors() map[Lane]uint64
	// Offline reports whether the primary sink is offline.
	Offline() bool
}

// FallbackOptions configure a FallbackSink.
type FallbackOptions struct {
	// Name is the sink name; default the direct sink's.
	Name   string
	Logger *slog.Logger
	// SendTimeout bounds one send to the direct sink; default 30 s. The
	// fallback's own Syncer should have a long SendTimeout, since its Send
	// also waits for the primary.
	SendTimeout time.Duration
	// poll is how often Send looks at the primary; default 50 ms.
	poll time.Duration
}

// FallbackSink stands in for a primary sink (a node's "aggregator") while it
// is offline (docs/format/aggregator.md, §5): records the primary has
// confirmed pass without being sent; while the primary is not offline, Send
// waits for it to confirm them; once it is offline, the records go through
// the direct sink (the cloud). It connects to the direct sink only when it
// has to send, so a healthy primary and an unreachable direct destination
// cause no failure. With JetStream sinks on both paths, the expected
// subject sequences make sure the cloud stores each record once, whichever
// path — or both — brought it.
type FallbackSink struct {
	o       FallbackOptions
	primary Primary
	direct  Sink

	// Used by the syncer's goroutine only.
	lanes      map[Lane]uint64
	saved      map[string]uint64
	resumed    bool // direct has been resumed since the last Resume
	goneDirect bool // the last Send went direct
	used       bool // direct has been resumed at least once: its positions count
}

// NewFallbackSink returns a sink that sends recs through direct only while
// primary is offline.
func NewFallbackSink(primary Primary, direct Sink, o FallbackOptions) *FallbackSink {
	if o.Name == "" {
		o.Name = direct.Name()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 30 * time.Second
	}
	if o.poll <= 0 {
		o.poll = 50 * time.Millisecond
	}
	return &FallbackSink{o: o, primary: primary, direct: direct}
}

func (f *FallbackSink) Name() string { return f.o.Name }

// SetPressure passes the buffer's pressure on to the direct sink.
func (f *FallbackSink) SetPressure(on bool) {
	if p, ok := f.direct.(Pressured); ok {
		p.SetPressure(on)
	}
}

// Resume keeps the cursors and positions for the direct sink, which is
// resumed with them only once something has to go direct.
func (f *FallbackSink) Resume(_ context.Context, lanes map[Lane]uint64, saved map[string]uint64) error {
	f.lanes, f.saved = maps.Clone(lanes), maps.Clone(saved)
	f.resumed = false
	return nil
}

// Send returns nil once every record of recs is confirmed by the primary or
// sent through the direct sink.
func (f *FallbackSink) Send(ctx context.Context, recs []Record) error {
	t := time.NewTicker(f.o.poll)
	defer t.Stop()
	for {
		recs = f.unconfirmed(recs)
		if len(recs) == 0 {
			return nil
		}
		if f.primary.Offline() {
			f.goneDirect = true
			return f.sendDirect(ctx, recs)
		}
		f.goneDirect = false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// unconfirmed drops from the front of recs (one lane, offset order) the
// records the primary has confirmed.
func (f *FallbackSink) unconfirmed(recs []Record) []Record {
	if len(recs) == 0 {
		return recs
	}
	c, ok := f.primary.LaneCursors()[recs[0].Lane]
	if !ok {
		return recs
	}
	i := 0
	for i < len(recs) && recs[i].Offset < c {
		i++
	}
	return recs[i:]
}

func (f *FallbackSink) sendDirect(ctx context.Context, recs []Record) error {
	ctx, cancel := context.WithTimeout(ctx, f.o.SendTimeout)
	defer cancel()
	if !f.resumed {
		if err := f.direct.Resume(ctx, f.lanes, f.saved); err != nil {
			return err
		}
		f.resumed, f.used = true, true
		f.o.Logger.Warn("the primary sink is offline: sending direct", "sink", f.o.Name, "from", recs[0].Offset)
	}
	if err := f.direct.Send(ctx, recs); err != nil {
		f.resumed = false // resume again from the saved positions
		return err
	}
	return nil
}

// Positions are the direct sink's positions over the ones saved before: a
// subject it did not publish on keeps its saved position.
func (f *FallbackSink) Positions() map[string]uint64 {
	out := maps.Clone(f.saved)
	if out == nil {
		out = map[string]uint64{}
	}
	if f.used {
		maps.Copy(out, f.direct.Positions())
	}
	return out
}

// Holds passes on what the direct sink holds back (Holder), while records
// go direct.
func (f *FallbackSink) Holds(r Record) bool { return f.Holding() && f.direct.(Holder).Holds(r) }

// Holding reports whether records go direct and the direct sink holds some
// back (Holder).
func (f *FallbackSink) Holding() bool {
	h, ok := f.direct.(Holder)
	return ok && f.goneDirect && h.Holding()
}

// Links are the direct sink's links (Linked), if it has several.
func (f *FallbackSink) Links() []LinkStatus {
	if ln, ok := f.direct.(Linked); ok {
		return ln.Links()
	}
	return nil
}

// LinkInUse is the direct sink's link in use (Linked).
func (f *FallbackSink) LinkInUse() int {
	if ln, ok := f.direct.(Linked); ok {
		return ln.LinkInUse()
	}
	return -1
}

func (f *FallbackSink) Close() error { return f.direct.Close() }
