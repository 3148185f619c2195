package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/hacluster"
	"github.com/holdfast-edge/holdfast/internal/leader"
	"github.com/holdfast-edge/holdfast/internal/replica"
)

// An HA pair (ha: config, --ha-listen): this file runs one member. The
// member link is an embedded clustered NATS server (internal/hacluster);
// leadership a compare-and-set on its replicated KV bucket with a term and a
// lease (internal/leader); the log goes from primary to standby by
// internal/replica. The pair shares one node id: the standby's buffer is an
// offset-for-offset copy of the primary's. A member runs in one of two
// modes, each a Node over the same data directory:
//
//   - primary (its term, a lease in force): the full node, every write
//     fenced by the term (ha_gate.go), the replication source serving the
//     standby;
//   - standby (or candidate, while no primary is known): the buffer, the
//     replication follower, and listeners that send devices to the primary
//     (HTTP 307, MQTT 5 CONNACK 0x9C with a server reference; MQTT 3.1.1 is
//     refused so the device tries its next server).
//
// Changing mode closes one Node and starts the other: a takeover costs one
// start of the node (the buffer opened, the checkpoint loaded).

// replicationSubject carries the standby's fetches to the primary.
const replicationSubject = "holdfast.ha.replicate"

// replicatedFiles are the state files the standby mirrors besides the log:
// the lane rules and the processing checkpoints (paths in the data dir).
var replicatedFiles = []string{"lanes", "checkpoints"}

// pairState is the member's view persisted in <data_dir>/ha/state: the term
// of the newest history its log belongs to (it was primary in it, or followed
// its primary).
type pairState struct {
	Term uint64 `json:"term"`
}

// Pair runs one node of an HA pair.
type Pair struct {
	cfg    config.Config
	log    *slog.Logger
	root   *slog.Logger         // the node's logger, for the modes
	reg    *prometheus.Registry // the pair's own metrics, beside each mode's
	member *hacluster.Member
	lead   atomic.Pointer[leader.Leader] // set once leadership runs
	self   leader.Info
	m      *haMetrics

	changes chan struct{} // the leader's state changed

	mu       sync.Mutex
	node     *Node  // the running mode
	term     uint64 // primary: its term; 0 in standby mode
	follower *followerRun
	started  time.Time
	followed uint64          // the term the standby mode last followed
	firing   haFiring        // the pair's firing alerts, across modes
	ledTerm  uint64          // the newest term this member took: alerts and the promote command once per term
	reported map[string]bool // quarantine reports written to the ledger
	diverged bool            // the follower found the log diverged: quarantine it whole
}

// haMetrics are the pair's metrics besides the leader's and replication's.
type haMetrics struct {
	lag         prometheus.Gauge
	paired      prometheus.Gauge
	standbyLost prometheus.Counter
	quarantined prometheus.Counter
	promote     *prometheus.CounterVec
}

func newHAMetrics(reg prometheus.Registerer) *haMetrics {
	f := promauto.With(reg)
	return &haMetrics{
		lag: f.NewGauge(prometheus.GaugeOpts{Name: "holdfast_ha_primary_lag_records",
			Help: "On the primary: durable records the standby does not hold yet."}),
		paired: f.NewGauge(prometheus.GaugeOpts{Name: "holdfast_ha_standby_eligible",
			Help: "On the primary: 1 while the standby holds every acknowledged record and may take over, 0 while the primary is alone."}),
		standbyLost: f.NewCounter(prometheus.CounterOpts{Name: "holdfast_ha_standby_lost_total",
			Help: "Times the primary was left without a standby that may take over: dropped (silent or stalled for ha.sync_timeout), or none for 3 × ha.sync_timeout."}),
		quarantined: f.NewCounter(prometheus.CounterOpts{Name: "holdfast_ha_quarantined_records_total",
			Help: "Records a returning primary never replicated, moved to <data_dir>/ha/quarantine and reported to the loss ledger."}),
		promote: f.NewCounterVec(prometheus.CounterOpts{Name: "holdfast_ha_promote_command_total",
			Help: "Runs of ha.promote_command, by result (ok, failed)."}, []string{"result"}),
	}
}

// StartPair starts this member of the pair: the member link, leadership,
// and the mode the leader's view gives (standby until it knows better).
func StartPair(ctx context.Context, cfg config.Config, logger *slog.Logger) (_ *Pair, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := cfg.HA
	secret, err := h.SecretValue()
	if err != nil {
		return nil, err
	}
	if err := checkLinkExposure(h.Listen, secret, cfg.Security.Insecure, "ha.listen"); err != nil {
		return nil, err
	}
	if secret == "" && cfg.Security.Insecure {
		logger.Warn("the pair's member link has no secret: anyone who reaches it can join the pair (security.insecure)", "ha_listen", h.Listen)
	}
	tc, err := MemberTLS(h.TLS)
	if err != nil {
		return nil, err
	}
	p := &Pair{cfg: cfg, log: logger.With("component", "ha"), root: logger, reg: prometheus.NewRegistry(),
		changes: make(chan struct{}, 1), started: time.Now()}
	p.m = newHAMetrics(p.reg)
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "ha"), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	name := h.MemberName(cfg.NodeID)
	p.member, err = hacluster.Start(hacluster.Options{
		Name: name, Listen: h.Listen, Advertise: h.Advertise, Peers: h.Peers, Secret: secret, TLS: tc,
		DataDir: filepath.Join(cfg.DataDir, "ha", "nats"), Logger: logger.With("component", "ha-link"),
	})
	if err != nil {
		return nil, fmt.Errorf("start the pair's member link on ha.listen %s: %w", h.Listen, err)
	}
	p.self = leader.Info{Member: name, NodeID: cfg.NodeID, HTTP: advertiseHTTP(cfg), MQTT: advertiseMQTT(cfg)}
	// Standby until the leader says otherwise: the listeners answer at once.
	if err := p.startStandby(leader.State{Role: leader.Candidate}); err != nil {
		return nil, err
	}
	p.log.Info("waiting for the pair's quorum (the other node or the witness)", "member", name, "ha_listen", h.Listen, "ha_peers", h.Peers)
	go p.run(ctx)
	return p, nil
}

// run waits for the quorum, runs leadership, and follows its changes until
// ctx ends.
func (p *Pair) run(ctx context.Context) {
	kv, err := p.member.KV(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Error("the pair's KV bucket is not available", "err", err)
		}
		return
	}
	h := p.cfg.HA
	lead, err := leader.Run(ctx, kv, leader.Options{
		Self: p.self, Heartbeat: h.Heartbeat, Failures: h.Failures, TakeoverDelay: h.TakeoverDelay, Lease: h.Lease,
		StartOffset: p.startOffset,
		OnChange: func(leader.State) {
			select {
			case p.changes <- struct{}{}:
			default:
			}
		},
		Logger: p.log, Registerer: p.reg,
	})
	if err != nil {
		p.log.Error("cannot run the pair's leadership", "err", err)
		return
	}
	p.lead.Store(lead)
	p.log.Info("member of the pair", "member", p.self.Member)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		p.reconcile()
		select {
		case <-ctx.Done():
			return
		case <-p.changes:
		case <-tick.C:
		}
	}
}

// poke makes run look at the leader's state now.
func (p *Pair) poke() {
	select {
	case p.changes <- struct{}{}:
	default:
	}
}

// startOffset is where a term this member takes starts: its log's end, with
// the follower stopped so that nothing more arrives from the old primary.
func (p *Pair) startOffset() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.follower != nil {
		p.follower.stop()
		p.follower = nil
	}
	if p.node == nil {
		return 0
	}
	return p.node.buf.NextOffset()
}

// reconcile brings the running mode in line with the leader's state.
func (p *Pair) reconcile() {
	lead := p.lead.Load()
	if lead == nil {
		return
	}
	st := lead.State()
	term, primary := lead.Fence()
	p.mu.Lock()
	running, node, follower, followed := p.term, p.node, p.follower, p.followed
	p.mu.Unlock()
	if running != 0 && node != nil && node.pair != nil && node.pair.lapsed.Load() {
		// A write was refused while the lease was gone: the processor
		// dropped what it could not write. Start the mode again, from the
		// checkpoint, whatever the term is now.
		p.log.Warn("the lease lapsed while primary: starting the mode again so that processing replays what it could not write", "term", running)
		p.stopMode()
		running, node, follower, followed = 0, nil, nil, 0
	}
	switch {
	case primary && running == term:
		return
	case primary:
		p.becomePrimary(st, term)
	case running != 0:
		p.log.Warn("no longer primary: stepping down to standby", "term", running, "current_term", st.Term, "primary", st.Primary.Member)
		p.stopMode()
		if err := p.startStandby(st); err != nil {
			p.log.Error("cannot start as standby; trying again", "err", err)
		}
	case node == nil:
		if err := p.startStandby(st); err != nil {
			p.log.Error("cannot start as standby; trying again", "err", err)
		}
	case follower != nil && errors.Is(follower.failed(), replica.ErrDiverged):
		p.log.Error("this member's log differs from the primary's: quarantining it and replicating afresh", "term", st.Term)
		p.stopMode()
		p.mu.Lock()
		p.diverged = true
		p.mu.Unlock()
		if err := p.startStandby(st); err != nil {
			p.log.Error("cannot start as standby; trying again", "err", err)
		}
	case follower == nil && followed == st.Term && st.Primary.Member != "" && st.Primary.Member != p.self.Member:
		// A takeover that did not happen stopped the follower: the log is
		// as it was, follow on.
		p.follow(node, st.Term)
	case st.Primary.Member != "" && st.Primary.Member != p.self.Member && (follower == nil || follower.term != st.Term || follower.failed() != nil):
		// A primary to follow, or a new term: check the log against the
		// term history, then follow.
		p.stopMode()
		if err := p.startStandby(st); err != nil {
			p.log.Error("cannot start as standby; trying again", "err", err)
		}
	}
}

// becomePrimary closes the standby mode and starts the full node in term.
func (p *Pair) becomePrimary(st leader.State, term uint64) {
	start := time.Now()
	p.stopMode()
	if err := writePairState(p.cfg.DataDir, pairState{Term: term}); err != nil {
		p.log.Error("cannot record the term; not taking writes", "err", err)
		return
	}
	n, err := startNode(p.cfg, p.root, &pairHooks{pair: p, term: term})
	if err != nil {
		p.log.Error("cannot start as primary", "term", term, "err", err)
		return
	}
	p.mu.Lock()
	p.node, p.term = n, term
	p.mu.Unlock()
	p.log.Warn("primary of the pair: taking writes", "term", term, "member", p.self.Member,
		"next_offset", n.buf.NextOffset(), "took", time.Since(start).Round(time.Millisecond))
	p.mu.Lock()
	newTerm := term > p.ledTerm
	if newTerm {
		p.ledTerm = term
	}
	p.mu.Unlock()
	if n.disp != nil && newTerm {
		now := time.Now().UnixMilli()
		n.disp.Send(alert.Alert{ID: "ha-takeover/" + strconv.FormatUint(term, 10), Rule: "ha-takeover", Severity: alert.Warning,
			State: alert.Firing, Stream: "*", DeviceID: p.self.Member, Value: float64(term), FiredAt: now})
	}
	if newTerm {
		p.promote(term)
	}
	// Writes go through the KV stream's leader: have it here, so that losing
	// the standby alone does not cost the quorum's answers.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.member.LeadBucket(ctx); err != nil {
			p.log.Debug("the leader bucket's stream leader stays where it is", "err", err)
		}
	}()
}

// promote runs ha.promote_command, if any, in the background.
func (p *Pair) promote(term uint64) {
	cmd := p.cfg.HA.PromoteCommand
	if cmd == "" {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
		c.Env = append(os.Environ(), "HOLDFAST_HA_TERM="+strconv.FormatUint(term, 10),
			"HOLDFAST_HA_MEMBER="+p.self.Member, "HOLDFAST_HA_HTTP="+p.self.HTTP, "HOLDFAST_HA_MQTT="+p.self.MQTT)
		out, err := c.CombinedOutput()
		if err != nil {
			p.m.promote.WithLabelValues("failed").Inc()
			p.log.Error("ha.promote_command failed", "term", term, "err", err, "output", string(out))
			return
		}
		p.m.promote.WithLabelValues("ok").Inc()
		p.log.Info("ha.promote_command ran", "term", term, "output", string(out))
	}()
}

// stopMode closes the running mode, if any.
func (p *Pair) stopMode() {
	p.mu.Lock()
	n, f := p.node, p.follower
	p.node, p.follower, p.term, p.followed = nil, nil, 0, 0
	p.mu.Unlock()
	if f != nil {
		f.stop()
	}
	if n != nil {
		if err := n.Close(); err != nil {
			p.log.Warn("closing the previous mode", "err", err)
		}
	}
}

// Close stops the running mode, leadership and the member link.
func (p *Pair) Close() error {
	p.stopMode()
	if p.member != nil {
		p.member.Close()
	}
	return nil
}

// Fence is the term while this member is primary with its lease in force.
func (p *Pair) Fence() (uint64, bool) {
	lead := p.lead.Load()
	if lead == nil {
		return 0, false
	}
	return lead.Fence()
}

// redirect says where devices should go while this member does not take
// writes: the primary's addresses, or ok false while it does.
func (p *Pair) redirect() (info leader.Info, ok bool) {
	if _, primary := p.Fence(); primary {
		return leader.Info{}, false
	}
	lead := p.lead.Load()
	if lead == nil {
		return leader.Info{}, true
	}
	st := lead.State()
	if st.Primary.Member == p.self.Member {
		return leader.Info{}, true // our own lease lapsed: nobody to send them to yet
	}
	return st.Primary, true
}

// status is the ha section of /v1/status.
func (p *Pair) status(n *Node) *api.HAStatus {
	s := &api.HAStatus{Role: string(leader.Candidate), Replication: p.cfg.HA.Replication, Member: p.self.Member}
	if lead := p.lead.Load(); lead != nil {
		st := lead.State()
		s.Role, s.Term = string(st.Role), st.Term
		if _, ok := lead.Fence(); st.Role == leader.Primary && !ok {
			s.Role = string(leader.Candidate)
		}
		if st.Primary.Member != "" {
			s.Primary = &api.HAPrimary{NodeID: st.Primary.NodeID, HTTP: st.Primary.HTTP, MQTT: st.Primary.MQTT, Member: st.Primary.Member}
		}
		s.Standby = st.Record.Standby
	}
	for _, ps := range p.member.Peers() {
		s.Links = append(s.Links, api.HALink{Member: ps.Name, Connected: ps.Connected})
	}
	p.mu.Lock()
	f := p.follower
	p.mu.Unlock()
	if f != nil {
		lag, next, contact := f.f.Lag()
		s.LagRecords, s.PrimaryNext = lag, next
		if !contact.IsZero() {
			s.LastContact = contact.UTC().Format(time.RFC3339Nano)
		}
	}
	if n != nil && n.pair != nil && n.pair.gate != nil {
		state, member := n.pair.gate.status()
		_, next, contact := n.pair.src.Replicated()
		durable := n.buf.DurableOffset()
		s.LagRecords = durable - min(next, durable)
		s.StandbyState, s.Standby = state.String(), member
		if !contact.IsZero() {
			s.LastContact = contact.UTC().Format(time.RFC3339Nano)
		}
	}
	return s
}

// MemberTLS builds the member link's TLS from ha.tls: this member's
// certificate, verifying the others' against the CA both ways. Nil without
// ha.tls.cert.
func MemberTLS(c config.HATLS) (*tls.Config, error) {
	if c.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("ha.tls: %w", err)
	}
	pem, err := os.ReadFile(c.CA)
	if err != nil {
		return nil, fmt.Errorf("ha.tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ha.tls.ca: %s holds no PEM certificate", c.CA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// checkLinkExposure refuses a member link beyond loopback without a secret,
// unless security.insecure accepts it.
func checkLinkExposure(addr, secret string, insecure bool, key string) error {
	if secret != "" || insecure || isLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%s %s is reachable beyond this host and the pair has no secret: set ha.secret (or ha.secret_file) on every member, "+
		"or accept the risk with --insecure (security.insecure)", key, addr)
}

func advertiseHTTP(cfg config.Config) string {
	if a := cfg.HA.AdvertiseHTTP; a != "" {
		return a
	}
	scheme := "http"
	if cfg.Security.TLS.Cert != "" {
		scheme = "https"
	}
	return scheme + "://" + cfg.HTTP.Addr
}

func advertiseMQTT(cfg config.Config) string {
	if a := cfg.HA.AdvertiseMQTT; a != "" {
		return a
	}
	if cfg.MQTT.Mode != "embedded" {
		return ""
	}
	return cfg.MQTT.Addr
}

func readPairState(dataDir string) (pairState, error) {
	var s pairState
	b, err := os.ReadFile(filepath.Join(dataDir, "ha", "state"))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dataDir, "ha", "state"), err)
	}
	return s, nil
}

func writePairState(dataDir string, s pairState) error {
	b, _ := json.Marshal(s)
	return vfs.WriteAtomic(vfs.OS, filepath.Join(dataDir, "ha", "state"), b)
}
