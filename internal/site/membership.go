package site

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"math/bits"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultFailureDetection is Options.FailureDetection's default.
const DefaultFailureDetection = 5 * time.Second

// minFailureDetection is the shortest FailureDetection Validate accepts:
// below it the probe timeout (a twentieth) is shorter than a loaded machine's
// scheduling delays.
const minFailureDetection = time.Second

// How often SetLoad's metadata reaches the others (docs/format/site.md).
const (
	loadMinInterval     = time.Second
	loadRefreshInterval = 5 * time.Second
)

// joinRetry is how often Start's background join tries the peers again.
const joinRetry = time.Second

// Options configures a Membership.
type Options struct {
	NodeID    string
	Listen    string   // host:port for gossip (TCP+UDP, memberlist); port 0 = any
	Advertise string   // host:port others reach; default Listen (resolved bound port)
	Peers     []string // host:port of other members to join; empty = first of a site
	// Secret is the shared site secret (site.secret); the gossip key is
	// derived from it (GossipKey). Empty means no encryption, which Validate
	// allows only when Listen is a loopback address.
	Secret           []byte
	Zone, HTTP, MQTT string
	// FailureDetection bounds how long a killed member stays in Members()
	// (default DefaultFailureDetection); see failureDetection for how it
	// maps onto memberlist's timers.
	FailureDetection time.Duration
	Logger           *slog.Logger // memberlist's own log goes through it at debug level
}

func (o Options) withDefaults() Options {
	if o.FailureDetection == 0 {
		o.FailureDetection = DefaultFailureDetection
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports every problem with o.
func (o Options) Validate() error {
	var errs []error
	if o.NodeID == "" {
		errs = append(errs, errors.New("site: node id is required"))
	}
	if _, _, err := splitHostPort(o.Listen); err != nil {
		errs = append(errs, fmt.Errorf("site: listen: %w", err))
	} else if len(o.Secret) == 0 && !isLoopback(o.Listen) {
		errs = append(errs, fmt.Errorf("site: gossip on %s would be unencrypted and unauthenticated: set site.secret (only a loopback listen address may go without)", o.Listen))
	}
	if o.Advertise != "" {
		if host, _, err := splitHostPort(o.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("site: advertise: %w", err))
		} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			errs = append(errs, fmt.Errorf("site: advertise %q: want the IP address others reach this node at", o.Advertise))
		}
	}
	for _, p := range o.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			errs = append(errs, fmt.Errorf("site: peer %q: %w", p, err))
		}
	}
	if o.FailureDetection != 0 && o.FailureDetection < minFailureDetection {
		errs = append(errs, fmt.Errorf("site: failure detection %v is below %v", o.FailureDetection, minFailureDetection))
	}
	md := meta{HTTP: o.HTTP, MQTT: o.MQTT, Zone: o.Zone, Load: worstLoad, Leaving: true}
	if b, err := md.encode(); err != nil {
		errs = append(errs, err)
	} else if len(b) > MetaLimit {
		errs = append(errs, fmt.Errorf("site: metadata of http, mqtt and zone may take %d bytes, more than the %d memberlist gossips: shorten them", len(b), MetaLimit))
	}
	return errors.Join(errs...)
}

// failureDetection maps fd (the time within which a killed member is dead
// everywhere) onto memberlist's timers, for sites of up to ~8 members
// (memberlist scales the suspicion timeout by log10(members) from 10 on):
//
//	ProbeInterval           fd/10  each member probes one other per interval
//	ProbeTimeout            fd/20  direct ack wait; then 3 indirect probes until the interval ends
//	SuspicionMult           4      suspect → dead after 4 probe intervals (0.4 fd)
//	SuspicionMaxTimeoutMult 1      not lengthened while waiting for confirmations
//	GossipInterval          fd/25  the "dead" message spreads in a few of these
//	DeadNodeReclaimTime     fd     a dead member's name may come back at a new address
//	PushPullInterval        2·fd   full state exchange with one member (anti-entropy)
//
// A dead member is probed by one of the others within one or two intervals
// (0.1–0.2 fd: every survivor probes in its own shuffled order), fails
// within one more (0.1 fd), is suspected for 0.4 fd and the news spreads in
// well under 0.1 fd: about 0.7–0.8 fd in all, leaving room for a loaded
// machine. The push/pull exchange (memberlist's LAN default is 30 s) repairs
// within 2·fd a view that missed a gossiped join or death (UDP, a busy
// machine). memberlist's awareness stretches the probe timeout of a member
// that is itself slow to answer, so a busy node is not declared dead for
// being busy; a member wrongly suspected refutes it within the 0.4 fd.
func failureDetection(c *memberlist.Config, fd time.Duration) {
	c.ProbeInterval = fd / 10
	c.ProbeTimeout = fd / 20
	c.SuspicionMult = 4
	c.SuspicionMaxTimeoutMult = 1
	c.GossipInterval = fd / 25
	c.DeadNodeReclaimTime = fd
	c.PushPullInterval = 2 * fd
}

// Membership is this node's view of its site: memberlist's members with the
// metadata they gossip. It is safe for concurrent use.
type Membership struct {
	o       Options
	log     *slog.Logger
	ml      *memberlist.Memberlist
	changes chan struct{}
	kick    chan struct{} // SetLoad → loop
	stop    chan struct{}
	wg      sync.WaitGroup
	closed  sync.Once
	suspect time.Duration // no direct ack for this long: "suspect"

	mu       sync.Mutex
	self     meta                   // guarded by mu: what NodeMeta gossips
	load     Load                   // guarded by mu: the latest SetLoad
	loadSent time.Time              // guarded by mu: when self.Load was last gossiped
	seen     map[string]*seenMember // guarded by mu: every member ever seen
	acked    map[string]time.Time   // guarded by mu: the last direct ack per member
	view     string                 // guarded by mu: fingerprint of the last Members()
}

type seenMember struct {
	m       Member
	since   time.Time // when it joined (or came back)
	leaving bool
}

// Start starts this node's member of the site and joins Peers in the
// background, trying again every second until one answers, so members can
// start in any order. ctx bounds only that joining; Leave or Close ends the
// membership.
func Start(ctx context.Context, o Options) (*Membership, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	o.Peers, o.Secret = slices.Clone(o.Peers), slices.Clone(o.Secret)
	m := &Membership{
		o:       o,
		log:     o.Logger.With("component", "site"),
		changes: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		self:    meta{HTTP: o.HTTP, MQTT: o.MQTT, Zone: o.Zone},
		seen:    make(map[string]*seenMember),
		acked:   make(map[string]time.Time),
	}
	c := memberlist.DefaultLANConfig()
	c.Name = o.NodeID
	c.BindAddr, c.BindPort, _ = splitHostPort(o.Listen)
	if strings.EqualFold(c.BindAddr, "localhost") {
		c.BindAddr = "127.0.0.1" // memberlist binds IP addresses only
	}
	if o.Advertise != "" {
		c.AdvertiseAddr, c.AdvertisePort, _ = splitHostPort(o.Advertise)
	}
	c.Label = Label
	if len(o.Secret) > 0 {
		key, err := GossipKey(o.Secret)
		if err != nil {
			return nil, err
		}
		c.SecretKey = key
		c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	} else {
		c.GossipVerifyIncoming, c.GossipVerifyOutgoing = false, false
	}
	failureDetection(c, o.FailureDetection)
	// A member probes each other one once per round of (members-1)
	// intervals, in shuffled order: two rounds without a direct ack.
	m.suspect = 2*c.ProbeInterval + c.ProbeTimeout
	d := (*delegate)(m)
	c.Delegate, c.Events, c.Conflict, c.Ping = d, d, d, d
	c.Logger = log.New(io.Discard, "", 0)
	if o.Logger.Handler().Enabled(context.Background(), slog.LevelDebug) {
		c.Logger = slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)
	}
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("site: start gossip on %s: %w", o.Listen, err)
	}
	m.ml = ml
	m.wg.Add(1)
	go m.loop()
	if len(o.Peers) > 0 {
		m.wg.Add(1)
		go m.join(ctx)
	}
	return m, nil
}

// join tries the peers every joinRetry until one answers.
func (m *Membership) join(ctx context.Context) {
	defer m.wg.Done()
	t := time.NewTicker(joinRetry)
	defer t.Stop()
	for attempt := 1; ; attempt++ {
		n, err := m.ml.Join(m.o.Peers)
		if n > 0 && m.ml.NumMembers() > 1 {
			m.log.Info("joined the site", "contacted", n, "members", m.ml.NumMembers())
			return
		}
		if attempt == 1 || attempt%30 == 0 {
			m.log.Warn("no site peer answered yet; trying again every second", "peers", m.o.Peers, "attempts", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

// loop gossips SetLoad's loads and fires Changes when Members() changes
// without an event (a member becoming suspect or alive again).
func (m *Membership) loop() {
	defer m.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.kick:
		case <-t.C:
			m.checkView()
		}
		m.gossipLoad()
	}
}

// gossipLoad updates this node's metadata when the load level has changed
// or the last update is loadRefreshInterval old, at most once per
// loadMinInterval.
func (m *Membership) gossipLoad() {
	now := time.Now()
	m.mu.Lock()
	since := now.Sub(m.loadSent)
	send := m.load != m.self.Load && since >= loadMinInterval &&
		(loadStep(m.load) != loadStep(m.self.Load) || since >= loadRefreshInterval)
	if send {
		m.self.Load = m.load
		m.loadSent = now
	}
	m.mu.Unlock()
	if send {
		// The update is queued whether or not the wait times out.
		_ = m.ml.UpdateNode(m.o.FailureDetection / 10)
	}
}

// loadStep is the load quantized as SetLoad sees it, without the site's
// mean: LoadLevel of CPU and Buffer, and the events rate's power of two.
func loadStep(l Load) [2]int {
	return [2]int{LoadLevel(l, 0), bits.Len64(uint64(max(0, l.EventsPerSec)))}
}

// SetLoad updates this node's gossiped metadata (memberlist UpdateNode), at most once per second, only when the quantized load level changes or every 5 s.
// It does not block: the update is sent from the background.
func (m *Membership) SetLoad(l Load) {
	for _, f := range []*float64{&l.EventsPerSec, &l.CPU, &l.Buffer} {
		if math.IsNaN(*f) || math.IsInf(*f, 0) || *f < 0 {
			*f = 0
		}
	}
	m.mu.Lock()
	m.load = l
	m.mu.Unlock()
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Self returns this node as the others see it.
func (m *Membership) Self() Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Member{NodeID: m.o.NodeID, HTTP: m.self.HTTP, MQTT: m.self.MQTT, Zone: m.self.Zone, Load: m.self.Load, State: StateAlive}
}

// Addr returns the gossip address this member advertises, host:port (with
// the port bound when Listen's was 0): what other members list in Peers.
func (m *Membership) Addr() string {
	return m.ml.LocalNode().Address()
}

// Members returns the alive members (self included), sorted by NodeID; suspect members are still included (state "suspect"), dead/left are not.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.membersLocked(time.Now())
}

func (m *Membership) membersLocked(now time.Time) []Member {
	out := make([]Member, 0, len(m.seen))
	for id, s := range m.seen {
		if s.m.State != StateAlive {
			continue
		}
		mb := s.m
		last := s.since
		if a := m.acked[id]; a.After(last) {
			last = a
		}
		if id != m.o.NodeID && now.Sub(last) > m.suspectAfter() {
			mb.State = StateSuspect
		}
		out = append(out, mb)
	}
	slices.SortFunc(out, byNodeID)
	return out
}

// suspectAfter is how long a member may go without a direct ack before this
// node shows it as suspect: two probe rounds. Lock should be held.
func (m *Membership) suspectAfter() time.Duration {
	alive := 0
	for _, s := range m.seen {
		if s.m.State == StateAlive {
			alive++
		}
	}
	return time.Duration(max(1, alive-1)) * m.suspect
}

// All returns every member ever seen with its state, for status pages,
// sorted by NodeID.
func (m *Membership) All() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := m.membersLocked(now)
	for _, s := range m.seen {
		if s.m.State != StateAlive {
			out = append(out, s.m)
		}
	}
	slices.SortFunc(out, byNodeID)
	return out
}

// Changes gets a value (non-blocking send, buffered 1) whenever Members()
// changes (join, leave, death, meta change, suspicion).
func (m *Membership) Changes() <-chan struct{} { return m.changes }

func (m *Membership) changed() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// checkView fires Changes when Members() differs from when it last looked.
func (m *Membership) checkView() {
	m.mu.Lock()
	var b strings.Builder
	for _, mb := range m.membersLocked(time.Now()) {
		fmt.Fprintf(&b, "%s|%s|%s|%s|%s|%v\x00", mb.NodeID, mb.State, mb.HTTP, mb.MQTT, mb.Zone, mb.Load)
	}
	diff := b.String() != m.view
	m.view = b.String()
	m.mu.Unlock()
	if diff {
		m.changed()
	}
}

// Leave tells the others this node is leaving (state "left" rather than
// "dead"), waits up to timeout for that to go out, then shuts down.
func (m *Membership) Leave(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	m.mu.Lock()
	m.self.Leaving = true
	m.mu.Unlock()
	var errs []error
	if m.ml.NumMembers() > 1 {
		// The others learn it is leaving (metadata), then that it left.
		if err := m.ml.UpdateNode(timeout / 2); err != nil {
			errs = append(errs, fmt.Errorf("site: announce leave: %w", err))
		}
		if err := m.ml.Leave(max(time.Until(deadline), 0)); err != nil {
			errs = append(errs, fmt.Errorf("site: leave: %w", err))
		}
	}
	errs = append(errs, m.Close())
	return errors.Join(errs...)
}

// Close shuts this member down without telling the others: they find it
// dead within FailureDetection. Closing again does nothing.
func (m *Membership) Close() error {
	var err error
	m.closed.Do(func() {
		close(m.stop)
		err = m.ml.Shutdown()
		m.wg.Wait()
	})
	return err
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, int(port), nil
}

// isLoopback reports whether a listen address reaches only this host:
// localhost or a loopback IP. "" or ":7946" (every interface), 0.0.0.0, ::,
// a LAN address and any other host name are not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
