package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/ingest/mqttin"
	"github.com/holdfast-edge/holdfast/internal/leader"
	"github.com/holdfast-edge/holdfast/internal/replica"
)

// The standby mode of a pair member: the buffer, kept an offset-for-offset
// copy of the primary's by the replication follower, and listeners that send
// devices to the primary.

// followerRun is a running replication follower.
type followerRun struct {
	f      *replica.Follower
	term   uint64
	cancel context.CancelFunc
	done   chan struct{}
	err    error // why Run returned on its own; read after done
}

// failed returns the error the follower stopped with, nil while it runs.
func (r *followerRun) failed() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

func (r *followerRun) stop() {
	r.cancel()
	<-r.done
}

// quarantineReport lists what a returning primary kept out of the new
// history: the loss ledger's unreplicated entries, one per stream. It waits
// in <data_dir>/ha/report until the primary has written them.
type quarantineReport struct {
	ID      string            `json:"id"` // the quarantine directory's name: a report delivered twice counts once
	Entries []quarantineEntry `json:"entries"`
}

type quarantineEntry struct {
	Stream string `json:"stream"`
	Count  uint64 `json:"count"`
	At     int64  `json:"at"` // Unix ms, when it was quarantined
}

// startStandby opens the standby mode: the buffer (quarantining a tail the
// current history does not hold), the follower once a primary is known, and
// listeners that redirect.
func (p *Pair) startStandby(st leader.State) (err error) {
	cfg := p.cfg
	n := &Node{cfg: cfg, log: p.root, started: time.Now(), reg: prometheus.NewRegistry(), pairOf: p}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if n.lock, err = lockDir(cfg.DataDir); err != nil {
		return err
	}
	if st.Primary.Member != "" && st.Primary.Member != p.self.Member {
		if err := p.checkHistory(st); err != nil {
			return err
		}
	}
	n.buf, err = OpenBuffer(cfg, buffer.Options{
		SegmentBytes: int64(cfg.Buffer.SegmentBytes), MaxBytes: int64(cfg.Buffer.MaxBytes),
		Logger: p.log.With("component", "buffer"), Metrics: buffer.NewMetrics(n.reg),
	})
	if err != nil {
		return fmt.Errorf("open buffer: %w", err)
	}
	if err := n.loadTLS(); err != nil {
		return err
	}
	if err := n.newAuth(); err != nil {
		return err
	}
	n.handleHUP()
	if cfg.MQTT.Mode == "embedded" {
		guard, err := n.mqttGuard()
		if err != nil {
			return err
		}
		b, err := mqttin.NewBroker(mqttin.BrokerOptions{
			Addr: cfg.MQTT.Addr, MaxPayload: int(cfg.MQTT.MaxPayload), Logger: p.log.With("component", "mqtt"),
			TLSConfig: n.serverTLS(), Guard: guard, AlertPrefix: cfg.Alerts.Notify.MQTTTopicPrefix,
			Redirect: n.mqttRedirect, AccessMetrics: mqttin.NewAccessMetrics(n.reg),
		}, refuseAppender{}, ingest.NewMetrics(n.reg))
		if err != nil {
			return err
		}
		if err := b.Start(); err != nil {
			return fmt.Errorf("start MQTT broker: %w", err)
		}
		n.broker = b
	}
	if err := n.startStandbyHTTP(); err != nil {
		return err
	}
	p.mu.Lock()
	p.node = n
	p.mu.Unlock()
	if st.Primary.Member != "" && st.Primary.Member != p.self.Member {
		if err := writePairState(cfg.DataDir, pairState{Term: st.Term}); err != nil {
			return err
		}
		p.follow(n, st.Term)
		p.log.Info("standby: following the primary", "primary", st.Primary.Member, "term", st.Term, "next_offset", n.buf.NextOffset())
	}
	return nil
}

// follow starts the replication follower into n's buffer for term.
func (p *Pair) follow(n *Node, term uint64) {
	reportPath := filepath.Join(p.cfg.DataDir, "ha", "report")
	f := replica.NewFollower(p.member.Conn(), replicationSubject, n.buf, replica.FollowerOptions{
		NodeID: p.cfg.NodeID, Member: p.self.Member, Term: func() uint64 { return term }, DataDir: p.cfg.DataDir,
		Report: func() []byte {
			b, err := os.ReadFile(reportPath)
			if err != nil {
				return nil
			}
			return b
		},
		ReportDone: func() { _ = os.Remove(reportPath) },
		Logger:     p.log.With("component", "replica"), Registerer: n.reg,
	})
	ctx, cancel := context.WithCancel(context.Background())
	r := &followerRun{f: f, term: term, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := f.Run(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("replication stopped", "err", err)
			r.err = err
			select {
			case p.changes <- struct{}{}:
			default:
			}
		}
	}()
	p.mu.Lock()
	p.follower, p.followed = r, term
	p.mu.Unlock()
}

// checkHistory compares the log with the term history: records this member
// wrote as primary of an older term beyond where the next term started never
// reached the new primary. The whole buffer then moves to
// <data_dir>/ha/quarantine (the follower fills a new one from the primary),
// and a report for the loss ledger waits for the primary.
func (p *Pair) checkHistory(st leader.State) error {
	ps, err := readPairState(p.cfg.DataDir)
	if err != nil {
		return err
	}
	p.mu.Lock()
	forced := p.diverged
	p.diverged = false
	p.mu.Unlock()
	if !forced && ps.Term >= st.Term {
		return nil
	}
	// Where the history left ours: the start of the first term after it.
	diverge, found := uint64(0), false
	for _, h := range st.Record.History {
		if h.Term > ps.Term {
			diverge, found = h.Start, true
			break
		}
	}
	if !found && st.Record.Term > ps.Term {
		diverge = st.Record.Start
	}
	dir := filepath.Join(p.cfg.DataDir, EngineName(p.cfg))
	if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
		return nil // nothing held
	}
	buf, err := OpenBuffer(p.cfg, buffer.Options{SegmentBytes: int64(p.cfg.Buffer.SegmentBytes), MaxBytes: int64(p.cfg.Buffer.MaxBytes),
		Logger: p.log.With("component", "buffer")})
	if err != nil {
		return fmt.Errorf("open buffer: %w", err)
	}
	next := buf.NextOffset()
	if forced {
		// The primary found our log different where the history says it is
		// the same: where it departs is not known, so nothing is counted
		// for the ledger; the whole log is kept in quarantine.
		diverge = next
	} else if next <= diverge {
		return buf.Close()
	}
	// Count what is lost, by stream, for the ledger.
	byStream := map[string]uint64{}
	r := buf.NewReader(diverge)
	for {
		_, pl, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.Close()
			buf.Close()
			return fmt.Errorf("read the unreplicated tail: %w", err)
		}
		if len(pl) > 0 && pl[0] == event.TypeEvent {
			byStream[recordStream(pl)]++
		}
	}
	r.Close()
	if err := buf.Close(); err != nil {
		return err
	}
	now := time.Now()
	qdir := filepath.Join(p.cfg.DataDir, "ha", "quarantine", fmt.Sprintf("term%d-%d-%d-%d", ps.Term, diverge, next, now.UnixMilli()))
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		return err
	}
	for _, name := range []string{EngineName(p.cfg), "checkpoints", "lanes", "ledger-intent", "store-index"} {
		if err := os.Rename(filepath.Join(p.cfg.DataDir, name), filepath.Join(qdir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("quarantine %s: %w", name, err)
		}
	}
	rep := quarantineReport{ID: filepath.Base(qdir)}
	total := uint64(0)
	for s, c := range byStream {
		rep.Entries = append(rep.Entries, quarantineEntry{Stream: s, Count: c, At: now.UnixMilli()})
		total += c
	}
	if len(rep.Entries) > 0 {
		b, _ := json.Marshal(rep)
		if err := vfs.WriteAtomic(vfs.OS, filepath.Join(p.cfg.DataDir, "ha", "report"), b); err != nil {
			return err
		}
	}
	p.m.quarantined.Add(float64(next - min(diverge, next)))
	p.log.Warn("this member's log holds records the pair's history does not: they never reached the standby that took over. "+
		"The buffer is quarantined and the events are reported to the loss ledger (unreplicated); replication fills a new one",
		"last_term", ps.Term, "current_term", st.Term, "from_offset", diverge, "to_offset", next, "events", total, "quarantine", qdir)
	return nil
}

// reportToLedger is the primary's side of a quarantine report: the entries
// go to the loss ledger (reason unreplicated), synced like any other.
func (n *Node) reportToLedger(member string, b []byte) error {
	var rep quarantineReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("quarantine report from %s: %w", member, err)
	}
	if !n.pairOf.firstReport(rep.ID) {
		return nil // a reply that was lost: the standby sent it again
	}
	recs := make([]event.LedgerRecord, 0, len(rep.Entries))
	for _, e := range rep.Entries {
		if e.Count == 0 || event.ValidName(e.Stream) != "" {
			continue
		}
		recs = append(recs, event.LedgerRecord{Reason: event.LossUnreplicated, Stream: e.Stream, From: e.At, To: e.At, Count: e.Count})
	}
	n.ledger.add(recs...)
	n.log.Warn("a returning member reported events it acknowledged that never replicated: in the loss ledger as unreplicated",
		"member", member, "streams", len(recs))
	return nil
}

// firstReport says whether the quarantine report id is new to this member.
func (p *Pair) firstReport(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reported == nil {
		p.reported = map[string]bool{}
	}
	if p.reported[id] {
		return false
	}
	p.reported[id] = true
	return true
}

// refuseAppender stores nothing: a standby's broker admits no client, and
// anything that still reaches it is refused.
type refuseAppender struct{}

func (refuseAppender) Append(context.Context, []event.Event) (ingest.Result, error) {
	return ingest.Result{}, errNotPrimary
}

// mqttRedirect is the broker's Redirect: while this member does not take
// writes, devices go to the primary's MQTT address.
func (n *Node) mqttRedirect() (string, bool) {
	info, redirect := n.pairOf.redirect()
	return info.MQTT, redirect
}

// redirectHTTP answers a request this member does not serve: 307 to the
// primary, or 503 while no primary is known.
func (n *Node) redirectHTTP(w http.ResponseWriter, r *http.Request) bool {
	info, redirect := n.pairOf.redirect()
	if !redirect {
		return false
	}
	if info.HTTP == "" {
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"error":"no primary: the pair is electing one"}`, http.StatusServiceUnavailable)
		return true
	}
	w.Header().Set("Location", info.HTTP+r.URL.RequestURI())
	w.WriteHeader(http.StatusTemporaryRedirect)
	return true
}

// pairRedirect wraps a primary's ingest and queries: once its lease is gone
// they go to the new primary (or wait for one). Its answers carry the term
// in the Holdfast-Term header.
func (n *Node) pairRedirect(h http.Handler) http.Handler {
	term := strconv.FormatUint(n.pair.term, 10)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.redirectHTTP(w, r) {
			return
		}
		w.Header().Set("Holdfast-Term", term)
		h.ServeHTTP(w, r)
	})
}

// startStandbyHTTP serves the standby's HTTP: ingest and queries go to the
// primary; status, health, metrics and the status page are its own.
func (n *Node) startStandbyHTTP() error {
	ln, err := net.Listen("tcp", n.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on http.addr: %w", err)
	}
	n.httpLn = ln
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !n.redirectHTTP(w, r) {
			// Primary by now, this mode about to close: try again.
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"taking over: try again"}`, http.StatusServiceUnavailable)
		}
	})
	mux := http.NewServeMux()
	for _, path := range []string{"/v1/events", "/v1/windows", "/v1/alerts"} {
		mux.Handle(path, redirect)
	}
	mux.Handle("/", api.New(api.Options{Ingest: redirect, Status: n.Status, Gatherer: n.gatherer(), Auth: n.guard(auth.TransportAPI)}))
	return n.serveHTTP(api.LimitPerSource(mux, n.cfg.HTTP.MaxConcurrentPerSource))
}

// gatherer is /metrics: the mode's registry and, in a pair, the pair's.
func (n *Node) gatherer() prometheus.Gatherer {
	if n.pairOf == nil {
		return n.reg
	}
	return prometheus.Gatherers{n.reg, n.pairOf.reg}
}
