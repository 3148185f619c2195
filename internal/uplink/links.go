package uplink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/secret"
)

// Link is one way to the cloud: a NATS URL with its credentials. Every link
// of a sink must reach the same JetStream streams (servers of one cluster,
// or two network paths to one server): the expected subject sequences and
// the saved positions are the streams', so they stay valid across a switch
// and each record is stored once whichever link carried it.
type Link struct {
	URL string
	// Metered links (a cellular backup) carry only what MeteredCarries
	// says; the rest waits in the log for an unmetered link.
	Metered bool
	Access  cloud.Access
}

// LinkStatus is the link a sink uses, in its status.
type LinkStatus struct {
	URL     string `json:"url"` // redacted
	Metered bool   `json:"metered"`
}

// Linked is implemented by sinks that reach their destination over one of
// several links: the syncer shows the one in use in the status and in the
// holdfast_sync_link metric.
type Linked interface {
	// Links lists the sink's links, in order of preference.
	Links() []LinkStatus
	// LinkInUse is the index in Links of the link in use (or last used);
	// -1 before the first connection. Safe to call from any goroutine.
	LinkInUse() int
}

// Holder is implemented by sinks that carry only some records for a while
// (over a metered link). The syncer does not give them the others: each
// lane's cursor stays at its first record held, the lane's reader goes on
// past it with the records the sink takes (marked Ahead), and once the sink
// holds nothing any more (Holding false) the lanes are read again from
// their cursors, so the held records follow in offset order and the ones
// sent ahead are found, not sent again.
type Holder interface {
	// Holds reports whether r must wait in the log for now.
	Holds(r Record) bool
	// Holding reports whether the sink holds any record back now.
	Holding() bool
}

// MeteredCarries says what a metered link carries: every record of the
// critical lane (critical events and alerts, the loss ledger), window
// results and alerts of any lane. Events of other lanes, watermarks and
// late marks wait for an unmetered link.
func MeteredCarries(r Record) bool {
	return r.Lane == LaneCritical || r.Type == event.TypeWindow || r.Type == event.TypeAlert
}

// DefaultPreferredProbe is how often a sink on a less preferred link tries
// the more preferred ones.
const DefaultPreferredProbe = 5 * time.Second

// Links lists the sink's links (Linked).
func (s *JetStreamSink) Links() []LinkStatus {
	out := make([]LinkStatus, len(s.o.Links))
	for i, l := range s.o.Links {
		out[i] = LinkStatus{URL: secret.RedactURL(l.URL), Metered: l.Metered}
	}
	return out
}

// LinkInUse is the index of the link in use or last used (Linked).
func (s *JetStreamSink) LinkInUse() int { return int(s.inUse.Load()) }

// Holds reports whether r waits for an unmetered link (Holder): only while
// the link in use is metered.
func (s *JetStreamSink) Holds(r Record) bool { return s.Holding() && !MeteredCarries(r) }

// Holding reports whether the link in use is metered (Holder).
func (s *JetStreamSink) Holding() bool {
	i := s.inUse.Load()
	return i >= 0 && s.o.Links[i].Metered
}

// dial connects over link i and checks that JetStream answers there.
func (s *JetStreamSink) dial(ctx context.Context, i int, timeout time.Duration) (*nats.Conn, jetstream.JetStream, error) {
	l := s.o.Links[i]
	opts := []nats.Option{
		nats.Name("holdfast " + s.o.NodeID),
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.Timeout(timeout),
		nats.ReconnectHandler(func(*nats.Conn) {
			if f := s.reconnected.Load(); f != nil {
				(*f)()
			}
		}),
	}
	if len(s.o.Links) > 1 {
		// The link in use is the one the status names: no reconnect to a
		// server the cluster advertises, possibly over another path.
		// A path that goes silent (no reset, no refusal) is noticed within
		// about 15 s instead of nats.go's default 4 minutes.
		opts = append(opts, nats.IgnoreDiscoveredServers(), nats.PingInterval(5*time.Second), nats.MaxPingsOutstanding(2))
	}
	nc, err := nats.Connect(l.URL, append(opts, l.Access.Options()...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", secret.RedactURL(l.URL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if s.o.EnsureLayout {
		err = cloud.EnsureLayout(ctx, js, cloud.LayoutOptions{})
	} else if len(s.o.Links) > 1 {
		actx, cancel := context.WithTimeout(ctx, timeout)
		_, err = js.AccountInfo(actx)
		cancel()
	}
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream over %s: %w", secret.RedactURL(l.URL), err)
	}
	return nc, js, nil
}

// use makes link i, connected as nc, the sink's link.
func (s *JetStreamSink) use(i int, nc *nats.Conn, js jetstream.JetStream) {
	if s.nc != nil {
		s.nc.Close()
	}
	prev := int(s.inUse.Swap(int32(i)))
	s.nc, s.js = nc, js
	s.preferTried = time.Now()
	if prev != i && len(s.o.Links) > 1 {
		s.o.Logger.Warn("cloud link in use", "sink", s.o.Name, "link", secret.RedactURL(s.o.Links[i].URL),
			"metered", s.o.Links[i].Metered, "preference", i+1)
	}
}

// connectAny connects over the most preferred link that answers. The link
// in use, if disconnected, is closed first: nats.go would only reconnect to
// it, and the sink fails over instead.
func (s *JetStreamSink) connectAny(ctx context.Context) error {
	if s.nc != nil {
		s.nc.Close()
		s.nc = nil
	}
	var errs []error
	for i := range s.o.Links {
		nc, js, err := s.dial(ctx, i, 5*time.Second)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.use(i, nc, js)
		return nil
	}
	return errors.Join(errs...)
}

// preferBack tries, at most every PreferredProbe, the links more preferred
// than the one in use, in the background, and switches to the first that
// answered once the attempt is over. It runs on the syncer's goroutine
// between batches, so nothing of the sink is in flight on the old link: a
// publish of it that still lands later is harmless (the expected sequences
// of docs/format/cloud.md). A preferred link that does not answer costs the
// metered one no stall: the attempt runs beside the sync.
func (s *JetStreamSink) preferBack(ctx context.Context) {
	select {
	case d := <-s.ready:
		s.probing = false
		if d.nc == nil {
			break
		}
		if cur := int(s.inUse.Load()); d.i >= cur || s.nc == nil {
			d.nc.Close() // the sink moved meanwhile
			break
		}
		s.o.Logger.Info("preferred cloud link answers again; switching back", "sink", s.o.Name,
			"link", secret.RedactURL(s.o.Links[d.i].URL))
		s.use(d.i, d.nc, d.js)
		return
	default:
	}
	cur := int(s.inUse.Load())
	if cur <= 0 || s.nc == nil || s.probing || time.Since(s.preferTried) < s.o.PreferredProbe {
		return
	}
	s.probing, s.preferTried = true, time.Now()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		for i := range cur {
			nc, js, err := s.dial(s.bgCtx, i, 2*time.Second)
			if err == nil {
				s.ready <- dialed{i, nc, js}
				return
			}
			s.o.Logger.Debug("preferred cloud link still down", "sink", s.o.Name, "link", secret.RedactURL(s.o.Links[i].URL), "err", err)
		}
		s.ready <- dialed{}
	}()
}

// dialed is a background attempt's connection; nc nil when none answered.
type dialed struct {
	i  int
	nc *nats.Conn
	js jetstream.JetStream
}

// stopProbe ends a background attempt and closes what it connected.
func (s *JetStreamSink) stopProbe() {
	s.bgCancel()
	s.bg.Wait()
	select {
	case d := <-s.ready:
		if d.nc != nil {
			d.nc.Close()
		}
	default:
	}
	s.probing = false
}

// probeLinks reports whether some link can be reached, dialling each.
func (s *JetStreamSink) probeLinks(ctx context.Context) error {
	var errs []error
	for _, l := range s.o.Links {
		err := dialProbe(ctx, l.URL)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
