package node

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/site"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
)

// siteMember makes a node one of a site (docs/format/site.md): it keeps the
// membership (internal/site, on memberlist), answers where a device
// belongs, redirects devices at the wrong node and forwards the events of
// those that cannot be redirected (MQTT 3.1.1) to their owner.
type siteMember struct {
	n      *Node
	ms     *site.Membership
	assign *site.Assigner
	self   string
	// token is what a forwarded request carries to prove it comes from a
	// member ("" without a site secret: loopback sites only).
	token   string
	client  *http.Client
	stop    context.CancelFunc
	wg      sync.WaitGroup // reportLoad and moveDevices
	metrics siteMetrics
}

type siteMetrics struct {
	redirects *prometheus.CounterVec // by transport
	forwarded *prometheus.CounterVec // by outcome: ok, failed (stored here instead)
	members   prometheus.GaugeFunc
}

// hopKey marks a request's context: its events are stored here whatever
// this node's view says (a redirected or forwarded request; one hop only).
type hopKey struct{}

func withHop(ctx context.Context) context.Context { return context.WithValue(ctx, hopKey{}, true) }
func hopped(ctx context.Context) bool             { v, _ := ctx.Value(hopKey{}).(bool); return v }

// Query parameters of POST /v1/events within a site: redirected names the
// node that sent the device here with a 307, forwarded the member that
// forwards the events (it authenticated the device; the request carries
// the site's member signature).
const (
	paramRedirected = "redirected"
	paramForwarded  = "forwarded"
	headerSiteAuth  = "Holdfast-Site-Auth"
)

// startSite joins the site once the listeners are up (their addresses are
// what the membership tells the others).
func (n *Node) startSite() error {
	sc := n.cfg.Site
	secret, err := sc.SecretValue()
	if err != nil {
		return err
	}
	if secret == "" && !isLoopback(sc.Listen) && !n.cfg.Security.Insecure {
		return fmt.Errorf("site.listen %s is reachable beyond this host and the site has no secret: set site.secret (or site.secret_file, $%s) on every member, or --insecure to accept the risk", sc.Listen, "HOLDFAST_SITE_SECRET")
	}
	if secret == "" && n.auth != nil {
		// Forwarded events skip device authentication on the strength of
		// the member signature, which needs the secret.
		return fmt.Errorf("site.secret (or site.secret_file, $HOLDFAST_SITE_SECRET) is required with security on: members sign the events they forward with it")
	}
	strategy, err := site.ParseStrategy(sc.Assign)
	if err != nil {
		return fmt.Errorf("site.assign: %w", err)
	}
	rules := make([]site.SemanticRule, len(sc.Rules))
	for i, r := range sc.Rules {
		rules[i] = site.SemanticRule{Devices: r.Devices, Streams: r.Streams, Nodes: r.Nodes, Zone: r.Zone}
	}
	as, err := site.NewAssigner(site.AssignOptions{Strategy: strategy, Rules: rules, ZoneOf: sc.ZoneOf})
	if err != nil {
		return fmt.Errorf("site.rules: %w", err)
	}
	tc, err := tlsconf.Client{CA: sc.TLS.CA}.Config()
	if err != nil {
		return fmt.Errorf("site.tls.ca: %w", err)
	}
	s := &siteMember{n: n, assign: as, self: n.cfg.NodeID,
		client: &http.Client{Timeout: sc.ForwardTimeout, Transport: &http.Transport{
			TLSClientConfig: tc, MaxIdleConnsPerHost: 16,
		}}}
	if secret != "" {
		s.token = forwardToken(secret)
	}
	ms, err := site.Start(context.Background(), site.Options{
		NodeID: n.cfg.NodeID, Listen: sc.Listen, Advertise: sc.Advertise, Peers: sc.Peers,
		Secret: []byte(secret), Zone: sc.Zone, HTTP: n.advertiseHTTP(), MQTT: n.advertiseMQTT(),
		FailureDetection: sc.FailureDetection, Logger: n.log.With("component", "site"),
	})
	if err != nil {
		return fmt.Errorf("join the site: %w", err)
	}
	s.ms = ms
	s.metrics = siteMetrics{
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_site_redirects_total",
			Help: "Devices sent to the node that owns them, by transport (http: 307, mqtt: CONNACK 0x9C).",
		}, []string{"transport"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_site_forwarded_events_total",
			Help: "Events forwarded to the node that owns their device, by outcome (ok; stored_here: the owner did not answer in site.forward_timeout and this node stored them).",
		}, []string{"outcome"}),
		members: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "holdfast_site_members",
			Help: "Live members of the site as this node sees them (itself included).",
		}, func() float64 { return float64(len(ms.Members())) }),
	}
	n.reg.MustRegister(s.metrics.redirects, s.metrics.forwarded, s.metrics.members)
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(2)
	go s.reportLoad(ctx)
	go s.moveDevices(ctx)
	n.site.Store(s)
	n.log.Info("site member", "listen", sc.Listen, "peers", sc.Peers, "assign", sc.Assign, "zone", sc.Zone)
	return nil
}

// forwardToken derives the member credential of forwarded requests from the
// site secret (HMAC-SHA256 with a fixed label): the secret itself never
// travels.
func forwardToken(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("holdfast site forward v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func (s *siteMember) close() {
	s.stop()
	s.wg.Wait()
	if err := s.ms.Leave(2 * time.Second); err != nil {
		s.n.log.Debug("leave the site", "err", err)
	}
}

// advertiseHTTP is the URL devices reach this node's HTTP listener at.
func (n *Node) advertiseHTTP() string {
	adv := n.cfg.Site.AdvertiseHTTP
	if adv == "" {
		adv = n.HTTPAddr()
	}
	if strings.Contains(adv, "://") {
		return strings.TrimRight(adv, "/")
	}
	if n.tls != nil {
		return "https://" + adv
	}
	return "http://" + adv
}

// advertiseMQTT is the host:port devices reach this node's broker at; ""
// without an embedded broker.
func (n *Node) advertiseMQTT() string {
	if n.broker == nil {
		return ""
	}
	if a := n.cfg.Site.AdvertiseMQTT; a != "" {
		return a
	}
	return n.MQTTAddr()
}

// owner returns the member owning the device (and stream) in this node's
// view, and whether that is another node. An empty zone is the one
// site.zones gives the device (the Assigner's ZoneOf).
func (s *siteMember) owner(device, zone, stream string) (site.Member, bool) {
	m, ok := s.assign.Owner(s.ms.Members(), site.Device{ID: device, Zone: zone, Stream: stream})
	if !ok {
		return site.Member{}, false
	}
	return m, m.NodeID != s.self
}

// reportLoad gossips this node's load every second: events stored per
// second, CPU, buffer level and sync lag.
func (s *siteMember) reportLoad(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var meter loadMeter
	meter.read(s.n, time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var l site.Load
			l.EventsPerSec, l.CPU = meter.read(s.n, now)
			if s.n.pressure != nil {
				l.Buffer = s.n.pressure.utilisation()
			}
			for _, sy := range s.n.syncs {
				l.LagRecords = max(l.LagRecords, sy.Status().LagRecords)
			}
			s.ms.SetLoad(l)
		}
	}
}

// moveDevices follows the membership: on every change, the MQTT 5
// devices connected here that now belong to another node are sent there
// (DISCONNECT 0x9C with the owner's address). Their events already reaching
// this node meanwhile are forwarded.
func (s *siteMember) moveDevices(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ms.Changes():
		}
		b := s.n.broker
		if b == nil {
			continue
		}
		if moved := b.MoveClients(s.n.mqttOwner, s.n.cfg.Site.ForwardTimeout); moved > 0 {
			s.n.log.Info("MQTT 5 devices sent to their new owners after a membership change", "devices", moved)
		}
	}
}

// siteAppender stores the events this node owns and forwards the others to
// their owners; a request that hopped here already is stored here whole.
// Every transport appends through it, so an MQTT 3.1.1 device (which
// cannot be redirected) is served where it lands.
type siteAppender struct {
	inner ingest.Appender
	n     *Node
}

func (a *siteAppender) Append(ctx context.Context, evs []event.Event) (ingest.Result, error) {
	s := a.n.site.Load()
	if s == nil || hopped(ctx) {
		return a.inner.Append(ctx, evs)
	}
	local := evs[:0:0]
	var foreign map[string][]event.Event
	owners := map[string]site.Member{}
	for _, ev := range evs {
		m, away := s.owner(ev.DeviceID, eventZone(ctx, ev), ev.Stream)
		if !away {
			local = append(local, ev)
			continue
		}
		if foreign == nil {
			foreign = map[string][]event.Event{}
		}
		foreign[m.NodeID] = append(foreign[m.NodeID], ev)
		owners[m.NodeID] = m
	}
	var res ingest.Result
	for id, fevs := range foreign {
		r, err := s.forward(ctx, owners[id], fevs)
		if err != nil {
			// The owner did not answer: this node serves them itself
			// (the aggregator's merge keeps the windows exact).
			s.metrics.forwarded.WithLabelValues("stored_here").Add(float64(len(fevs)))
			s.n.log.Warn("forwarding to the owner failed; storing here", "owner", id, "events", len(fevs), "err", err)
			local = append(local, fevs...)
			continue
		}
		s.metrics.forwarded.WithLabelValues("ok").Add(float64(len(fevs)))
		res.Stored += r.Stored
		res.Duplicates += r.Duplicates
	}
	if len(local) > 0 {
		r, err := a.inner.Append(ctx, local)
		if err != nil {
			return res, err
		}
		res.Stored += r.Stored
		res.Duplicates += r.Duplicates
	}
	return res, nil
}

// wireEvent is an event as forwarded: the JSON devices send.
type wireEvent struct {
	DeviceID string            `json:"device_id"`
	Stream   string            `json:"stream"`
	TS       int64             `json:"ts"`
	Value    float64           `json:"value"`
	ID       string            `json:"id,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
}

// forward posts evs to their owner's /v1/events and returns once the owner
// has them durably.
func (s *siteMember) forward(ctx context.Context, to site.Member, evs []event.Event) (ingest.Result, error) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	for _, ev := range evs {
		if err := enc.Encode(wireEvent{ev.DeviceID, ev.Stream, ev.TS, ev.Value, ev.ID, ev.Tags}); err != nil {
			return ingest.Result{}, err
		}
	}
	u := to.HTTP + "/v1/events?" + paramForwarded + "=" + url.QueryEscape(s.self)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, &body)
	if err != nil {
		return ingest.Result{}, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if s.token != "" {
		req.Header.Set(headerSiteAuth, s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return ingest.Result{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return ingest.Result{}, fmt.Errorf("%s answered %s: %s", to.NodeID, resp.Status, bytes.TrimSpace(b))
	}
	var r struct {
		Accepted, Duplicates int
		Rejected             []struct{ Error string }
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return ingest.Result{}, fmt.Errorf("%s: %w", to.NodeID, err)
	}
	if len(r.Rejected) > 0 {
		// The events passed this node's checks; the owner refusing one
		// (its buffer under pressure) is reported, the rest are stored.
		return ingest.Result{}, fmt.Errorf("%s refused %d of %d: %s", to.NodeID, len(r.Rejected), len(evs), r.Rejected[0].Error)
	}
	return ingest.Result{Stored: r.Accepted - r.Duplicates, Duplicates: r.Duplicates}, nil
}

// siteHTTP wraps POST /v1/events: a forwarded request from a member is
// checked and marked to be stored here; a redirected one is marked too.
func (n *Node) siteHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := n.site.Load()
		if s == nil || r.URL.Path != "/v1/events" || r.Method != http.MethodPost {
			h.ServeHTTP(w, r)
			return
		}
		q := r.URL.Query()
		if z := q.Get("zone"); z != "" {
			r = r.WithContext(context.WithValue(r.Context(), zoneKey{}, z))
		}
		switch {
		case q.Has(paramForwarded):
			if s.token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get(headerSiteAuth)), []byte(s.token)) != 1 {
				http.Error(w, `{"accepted":0,"rejected":[],"error":"forwarded request without a valid site signature (Holdfast-Site-Auth): only site members forward events"}`, http.StatusUnauthorized)
				return
			}
			r = r.WithContext(withMember(withHop(r.Context())))
		case q.Has(paramRedirected):
			r = r.WithContext(withHop(r.Context()))
		}
		h.ServeHTTP(w, r)
	})
}

// zoneKey carries a request's zone parameter to the appender.
type zoneKey struct{}

// eventZone is the zone an event's device is in for assignment: the
// request's zone parameter, else the event's zone tag, else "" (site.zones).
func eventZone(ctx context.Context, ev event.Event) string {
	if z, _ := ctx.Value(zoneKey{}).(string); z != "" {
		return z
	}
	return ev.Tags["zone"]
}

// memberKey marks a request forwarded by a member: the member authenticated
// the device already.
type memberKey struct{}

func withMember(ctx context.Context) context.Context {
	return context.WithValue(ctx, memberKey{}, true)
}

// fromMember says whether r was forwarded by a site member.
func fromMember(r *http.Request) bool { v, _ := r.Context().Value(memberKey{}).(bool); return v }

// redirectEvents is httpin's Redirect: when every event of a request
// belongs to one other node (and the request has not hopped already), the
// device is sent there with a 307 and nothing is stored here.
func (n *Node) redirectEvents(r *http.Request, evs []event.Event) string {
	s := n.site.Load()
	if s == nil || hopped(r.Context()) || len(evs) == 0 {
		return ""
	}
	var to site.Member
	for i, ev := range evs {
		m, away := s.owner(ev.DeviceID, eventZone(r.Context(), ev), ev.Stream)
		if !away || i > 0 && m.NodeID != to.NodeID {
			return "" // some here, or several owners: stored here and forwarded
		}
		to = m
	}
	s.metrics.redirects.WithLabelValues("http").Inc()
	q := r.URL.Query()
	q.Set(paramRedirected, s.self)
	return to.HTTP + r.URL.Path + "?" + q.Encode()
}

// mqttOwner is the broker's Redirect for a site: an MQTT 5 device whose
// owner is another node is sent there (CONNACK 0x9C with its address).
func (n *Node) mqttOwner(device string) (string, bool) {
	s := n.site.Load()
	if s == nil || device == "" {
		return "", false
	}
	m, away := s.owner(device, "", "")
	if !away || m.MQTT == "" {
		return "", false
	}
	s.metrics.redirects.WithLabelValues("mqtt").Inc()
	return m.MQTT, true
}

// SiteStatus is the site section of /v1/status (DESIGN §8).
type SiteStatus struct {
	Self    string        `json:"self"`
	Assign  string        `json:"assign"`
	Zone    string        `json:"zone,omitempty"`
	Members []site.Member `json:"members"`
}

func (s *siteMember) status() *SiteStatus {
	return &SiteStatus{Self: s.self, Assign: s.n.cfg.Site.Assign, Zone: s.n.cfg.Site.Zone, Members: s.ms.All()}
}

// assign serves GET /v1/assign?device_id=ID[&zone=Z][&stream=S].
func (n *Node) assign(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "device_id" && k != "zone" && k != "stream" {
			writeJSONError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: /v1/assign takes device_id, zone and stream", k))
			return
		}
	}
	dev := q.Get("device_id")
	if dev == "" {
		writeJSONError(w, http.StatusBadRequest, "device_id is required")
		return
	}
	s := n.site.Load()
	if s == nil {
		writeJSONError(w, http.StatusServiceUnavailable, "not a site member yet")
		return
	}
	m, ok := s.assign.Owner(s.ms.Members(), site.Device{ID: dev, Zone: q.Get("zone"), Stream: q.Get("stream")})
	if !ok {
		writeJSONError(w, http.StatusServiceUnavailable, "no live member")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		DeviceID string `json:"device_id"`
		NodeID   string `json:"node_id"`
		HTTP     string `json:"http"`
		MQTT     string `json:"mqtt"`
		Zone     string `json:"zone,omitempty"`
	}{dev, m.NodeID, m.HTTP, m.MQTT, m.Zone})
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
