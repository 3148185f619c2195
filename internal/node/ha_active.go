package node

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/nats-io/nats.go"

	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/hacluster"
	"github.com/holdfast-edge/holdfast/internal/peerwindows"
)

// An active-active pair (ha.mode: active-active): both nodes take devices,
// each with its own log and node id, and either answers GET /v1/windows for
// the pair by merging its window partials with the other node's
// (internal/peerwindows), fetched over the member link — a two-member
// nats-server cluster without JetStream, authenticated like the
// active-passive pair's. Nothing else is shared: either node survives the
// other's loss, answering from itself alone, marked partial.

// activeSubject carries the window exchange between the two nodes. Each
// node's connection does not hear itself (nats.NoEcho), so a request
// reaches the other node only.
const activeSubject = "holdfast.pair.windows"

// activePair is an active-active node's member link and window exchange.
type activePair struct {
	member *hacluster.Member
	nc     *nats.Conn
	stop   func()
}

// startActive joins the pair: the member link, and the window exchange
// serving this node's partials.
func (n *Node) startActive() error {
	h := n.cfg.HA
	secret, err := h.SecretValue()
	if err != nil {
		return err
	}
	if err := checkLinkExposure(h.Listen, secret, n.cfg.Security.Insecure, "ha.listen"); err != nil {
		return err
	}
	tc, err := MemberTLS(h.TLS)
	if err != nil {
		return err
	}
	m, err := hacluster.Start(hacluster.Options{
		Name: h.MemberName(n.cfg.NodeID), Listen: h.Listen, Advertise: h.Advertise, Peers: h.Peers, Secret: secret, TLS: tc,
		DataDir: filepath.Join(n.cfg.DataDir, "ha", "nats"), Logger: n.log.With("component", "ha-link"), NoJetStream: true,
	})
	if err != nil {
		return fmt.Errorf("start the pair's member link on ha.listen %s: %w", h.Listen, err)
	}
	a := &activePair{member: m}
	n.active = a
	if a.nc, err = m.Connect(nats.NoEcho()); err != nil {
		return err
	}
	src := peerwindows.Local{Store: n.store}
	if n.proc != nil {
		src.Open = n.proc.OpenPartials
	}
	if a.stop, err = peerwindows.Serve(a.nc, activeSubject, src); err != nil {
		return err
	}
	n.log.Info("active-active pair: serving window partials to the other node", "member", m.Name(), "ha_listen", h.Listen, "ha_peers", h.Peers)
	return nil
}

// peer fetches the other node's window partials for GET /v1/windows.
func (a *activePair) peer(ctx context.Context, q peerwindows.Query) (peerwindows.Page, error) {
	return peerwindows.Fetch(ctx, a.nc, activeSubject, q)
}

func (a *activePair) status() *api.HAStatus {
	s := &api.HAStatus{Role: "active", Replication: "none", Member: a.member.Name()}
	for _, ps := range a.member.Peers() {
		s.Links = append(s.Links, api.HALink{Member: ps.Name, Connected: ps.Connected})
	}
	return s
}

func (a *activePair) close() {
	if a.stop != nil {
		a.stop()
	}
	if a.nc != nil {
		a.nc.Close()
	}
	a.member.Close()
}
