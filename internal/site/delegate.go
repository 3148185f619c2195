package site

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is the Membership as memberlist's delegates. memberlist calls
// them holding its own locks, so they take only Membership.mu and never call
// back into memberlist.
type delegate Membership

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate     = (*delegate)(nil)
)

// NodeMeta returns this node's metadata (docs/format/site.md).
func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	md := d.self
	d.mu.Unlock()
	b, err := md.encode()
	if err != nil || len(b) > limit {
		// Validate rules both out; never hand memberlist more than the limit.
		d.log.Error("site metadata does not fit", "bytes", len(b), "limit", limit, "err", err)
		md.Load = Load{}
		if b, err = md.encode(); err != nil || len(b) > limit {
			return []byte{MetaVersion, '{', '}'}
		}
	}
	return b
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin records n alive.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.update(n, true) }

// NotifyUpdate records n's new metadata.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.update(n, false) }

func (d *delegate) update(n *memberlist.Node, joined bool) {
	md, err := decodeMeta(n.Meta)
	if err != nil {
		d.log.Warn("site member's metadata unreadable", "node_id", n.Name, "addr", n.Address(), "err", err)
	}
	d.mu.Lock()
	s := d.seen[n.Name]
	if s == nil {
		s = &seenMember{}
		d.seen[n.Name] = s
	}
	if joined || s.m.State != StateAlive {
		s.since = time.Now()
	}
	s.m = Member{NodeID: n.Name, HTTP: md.HTTP, MQTT: md.MQTT, Zone: md.Zone, Load: md.Load, State: StateAlive}
	s.leaving = md.Leaving
	d.mu.Unlock()
	(*Membership)(d).changed()
}

// NotifyLeave records n left (it said it was leaving) or dead.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	d.mu.Lock()
	if s := d.seen[n.Name]; s != nil {
		s.m.State = StateDead
		if s.leaving {
			s.m.State = StateLeft
		}
		d.log.Info("site member gone", "node_id", n.Name, "state", s.m.State)
	}
	delete(d.acked, n.Name)
	d.mu.Unlock()
	(*Membership)(d).changed()
}

// NotifyConflict reports two members claiming one node id.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.log.Error("two site members claim one node id; node ids must be unique in a site, the second is refused",
		"node_id", existing.Name, "known_at", existing.Address(), "other_at", other.Address())
}

func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete records a direct ack from other.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	d.mu.Lock()
	d.acked[other.Name] = time.Now()
	d.mu.Unlock()
}
