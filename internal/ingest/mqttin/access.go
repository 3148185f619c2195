package mqttin

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/holdfast-edge/holdfast/internal/auth"
)

// DefaultAlertPrefix is the topic prefix of the node's alerts when
// BrokerOptions.AlertPrefix is "": only the node publishes under it.
const DefaultAlertPrefix = "holdfast/alerts"

// DefaultMaxConnectionsPerSource is the configuration's default per-source
// connection limit (BrokerOptions.MaxConnectionsPerSource; 0 there is none).
const DefaultMaxConnectionsPerSource = 100

// CONNACK refusals: the MQTT 5 reason code and the MQTT 3.1.1 return code.
type refusal struct {
	v5 packets.Code
	v3 byte
}

var (
	refuseBadLogin      = refusal{packets.ErrBadUsernameOrPassword, 0x04}    // wrong, unknown, revoked credentials
	refuseNotAuthorized = refusal{packets.ErrNotAuthorized, 0x05}            // none, rate limited, certificate of no device
	refuseSourceLimit   = refusal{packets.ErrQuotaExceeded, 0x03}            // too many connections from the source
	refuseClientID      = refusal{packets.ErrClientIdentifierNotValid, 0x02} // another device's session
)

// AccessMetrics counts what the broker's access control refused besides
// credentials (those are auth.Metrics'): connections over the per-source
// limit, and publishes and subscriptions the ACL denied. A nil
// *AccessMetrics counts nothing.
type AccessMetrics struct {
	refused *prometheus.CounterVec
	denied  *prometheus.CounterVec
}

// NewAccessMetrics registers the metrics with reg; nil reg registers nothing.
func NewAccessMetrics(reg prometheus.Registerer) *AccessMetrics {
	f := promauto.With(reg)
	return &AccessMetrics{
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_mqtt_connections_refused_total",
			Help: "MQTT connections refused other than for their credentials, by reason (source_limit: mqtt.max_connections_per_source; client_id_in_use: another device's session; redirect: a standby sending the device to its primary).",
		}, []string{"reason"}),
		denied: f.NewCounterVec(prometheus.CounterOpts{
			Name: "holdfast_mqtt_acl_denied_total",
			Help: "MQTT publishes and subscriptions the ACL denied, by action (publish, subscribe) and reason (alert_prefix, wrong_device, forbidden, other_topic).",
		}, []string{"action", "reason"}),
	}
}

func (m *AccessMetrics) refuse(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

func (m *AccessMetrics) deny(write bool, reason string) {
	if m != nil {
		action := "subscribe"
		if write {
			action = "publish"
		}
		m.denied.WithLabelValues(action, reason).Inc()
	}
}

// connTable knows each open connection's source and, once authenticated,
// its device. The listener adds and removes connections, so an entry lives
// exactly as long as its connection, however mochi ends the session.
type connTable struct {
	mu       sync.RWMutex
	conns    map[net.Conn]*connInfo // guarded by mu
	bySource map[string]int         // open connections per source; guarded by mu
}

type connInfo struct {
	source string
	dev    *auth.Device // nil until authenticated
}

func newConnTable() *connTable {
	return &connTable{conns: map[net.Conn]*connInfo{}, bySource: map[string]int{}}
}

// sourceOf is the source a connection counts against: its IP address.
func sourceOf(c net.Conn) string {
	a := c.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return a
}

// isLoopback reports whether c comes from a loopback address: the node's
// own machine (a local gateway or proxy, whose clients all share its
// address; `holdfast bench`), which the per-source limit does not count.
func isLoopback(c net.Conn) bool {
	ip, err := netip.ParseAddr(sourceOf(c))
	return err == nil && ip.IsLoopback()
}

func (t *connTable) add(c net.Conn) {
	s := sourceOf(c)
	t.mu.Lock()
	t.conns[c] = &connInfo{source: s}
	t.bySource[s]++
	t.mu.Unlock()
}

func (t *connTable) remove(c net.Conn) {
	t.mu.Lock()
	if ci := t.conns[c]; ci != nil {
		delete(t.conns, c)
		if t.bySource[ci.source]--; t.bySource[ci.source] <= 0 {
			delete(t.bySource, ci.source)
		}
	}
	t.mu.Unlock()
}

// sourceConns returns how many connections are open from c's source, c included.
func (t *connTable) sourceConns(c net.Conn) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if ci := t.conns[c]; ci != nil {
		return t.bySource[ci.source]
	}
	return 0
}

func (t *connTable) setDevice(c net.Conn, d auth.Device) {
	t.mu.Lock()
	if ci := t.conns[c]; ci != nil {
		ci.dev = &d
	}
	t.mu.Unlock()
}

func (t *connTable) device(c net.Conn) *auth.Device {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if ci := t.conns[c]; ci != nil {
		return ci.dev
	}
	return nil
}

// accessHook is the broker's access control: the per-source connection
// limit, authentication (when a Guard is set) and the ACL. Without a Guard
// anyone may connect and do anything but publish under the alert prefix.
type accessHook struct {
	mqtt.HookBase
	srv       *mqtt.Server
	guard     *auth.Guard // nil: no authentication
	alert     string      // alert prefix, without a trailing /
	maxSource int         // 0: no limit
	// limitLoopback applies maxSource to loopback sources too (tests).
	limitLoopback bool
	conns         *connTable
	m             *AccessMetrics
	log           *slog.Logger
	redirect      func() (ref string, ok bool)              // BrokerOptions.Redirect
	owner         func(device string) (ref string, ok bool) // BrokerOptions.Owner
}

func (h *accessHook) ID() string { return "holdfast-access" }

func (h *accessHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnect refuses a connection over its source's limit, then checks its
// credentials. It answers a refusal with its own CONNACK (mochi's would be
// MQTT 5's 0x86 for every case, and 0x05 for it in 3.1.1) and returns an
// error, on which mochi closes the connection.
func (h *accessHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if h.redirect != nil {
		if ref, ok := h.redirect(); ok {
			h.m.refuse("redirect")
			return h.refuseRedirect(cl, ref)
		}
	}
	if h.owner != nil && cl.Properties.ProtocolVersion == 5 {
		dev := string(pk.Connect.Username)
		if dev == "" {
			dev = pk.Connect.ClientIdentifier
		}
		if ref, ok := h.owner(dev); ok {
			h.m.refuse("redirect")
			return h.refuseRedirect(cl, ref)
		}
	}
	if h.maxSource > 0 && (h.limitLoopback || !isLoopback(cl.Net.Conn)) && h.conns.sourceConns(cl.Net.Conn) > h.maxSource {
		h.m.refuse("source_limit")
		h.log.Debug("connection refused: too many from its source", "remote", cl.Net.Remote, "limit", h.maxSource)
		return h.refuse(cl, refuseSourceLimit)
	}
	if h.guard == nil {
		return nil
	}
	dev, err := h.login(cl, pk)
	if err != nil {
		h.log.Debug("connection refused", "remote", cl.Net.Remote, "client", cl.ID, "reason", auth.Reason(err))
		r := refuseBadLogin
		if errors.Is(err, auth.ErrRateLimited) || errors.Is(err, auth.ErrNoCredentials) || errors.Is(err, auth.ErrNotConfigured) {
			r = refuseNotAuthorized
		}
		return h.refuse(cl, r)
	}
	// A client id is a session: one device may not take over another's
	// (its subscriptions, its queued messages), nor disconnect it by
	// connecting with its id. Each session's Username is its device id.
	if old, ok := h.srv.Clients.Get(cl.ID); ok && string(old.Properties.Username) != dev.ID {
		h.m.refuse("client_id_in_use")
		h.log.Debug("connection refused: another device's client id", "remote", cl.Net.Remote, "client", cl.ID, "device", dev.ID)
		return h.refuse(cl, refuseClientID)
	}
	cl.Properties.Username = []byte(dev.ID)
	h.conns.setDevice(cl.Net.Conn, dev)
	return nil
}

// login finds the client's device: by its verified client certificate when
// it sends no password, otherwise by username (the device id) and password
// (its token).
func (h *accessHook) login(cl *mqtt.Client, pk packets.Packet) (auth.Device, error) {
	addr := cl.Net.Remote
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	if cert := verifiedCert(cl.Net.Conn); cert != nil && pass == "" {
		return h.guard.DeviceCert(addr, user, cert)
	}
	if h.guard.Auth == nil || !h.guard.Auth.HasDevices() {
		// Client certificates only (security.tls.client_ca without a devices file).
		err := auth.ErrNoCredentials
		if pass != "" {
			err = auth.ErrNotConfigured
		}
		h.guard.Metrics.Failure(h.guard.Transport, err)
		return auth.Device{}, err
	}
	return h.guard.DeviceLogin(addr, user, pass)
}

// verifiedCert returns the client's certificate if the TLS handshake verified it.
func verifiedCert(c net.Conn) *x509.Certificate {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 && len(st.VerifiedChains[0]) > 0 {
		return st.VerifiedChains[0][0]
	}
	return nil
}

// refuse sends the CONNACK refusal r and returns the error ending the connection.
func (h *accessHook) refuse(cl *mqtt.Client, r refusal) error {
	var err error
	if cl.Properties.ProtocolVersion == 5 {
		err = h.srv.SendConnack(cl, r.v5, false, nil)
	} else {
		err = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: r.v3})
	}
	if err != nil {
		h.log.Debug("write CONNACK refusal", "remote", cl.Net.Remote, "error", err)
	}
	return r.v5
}

// refuseRedirect refuses a client this node does not serve: MQTT 5 with
// 0x9C "use another server" naming ref, MQTT 3.1.1 with 0x03.
func (h *accessHook) refuseRedirect(cl *mqtt.Client, ref string) error {
	var err error
	if cl.Properties.ProtocolVersion == 5 {
		err = h.srv.SendConnack(cl, packets.ErrUseAnotherServer, false, &packets.Properties{ServerReference: ref})
	} else {
		err = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: 0x03})
	}
	if err != nil {
		h.log.Debug("write CONNACK redirect", "remote", cl.Net.Remote, "error", err)
	}
	return packets.ErrUseAnotherServer
}

// OnConnectAuthenticate accepts: OnConnect refused whoever it had to.
func (h *accessHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck decides a publish (write) to a topic, a subscription to a
// filter, and the delivery of a message to a subscriber (write false, a
// topic). Nobody publishes under the alert prefix: the node publishes
// there through mochi's inline client, which skips this check. An
// authenticated device publishes only devices/<its id>/<stream> with a
// stream it may send, and subscribes only to devices/<its id>/... and to
// the alert prefix, read-only (a site's displays show alerts).
func (h *accessHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	reason := h.deny(cl, topic, write)
	if reason == "" {
		return true
	}
	h.m.deny(write, reason)
	h.log.Debug("ACL denied", "client", cl.ID, "remote", cl.Net.Remote, "topic", topic, "publish", write, "reason", reason)
	return false
}

// deny returns why cl may not publish to (write) or read topic, "" if it may.
func (h *accessHook) deny(cl *mqtt.Client, topic string, write bool) string {
	if write && underPrefix(topic, h.alert) {
		return "alert_prefix"
	}
	if h.guard == nil {
		return ""
	}
	dev := h.conns.device(cl.Net.Conn)
	if dev == nil {
		return "other_topic" // cannot happen: every client was authenticated
	}
	if write {
		id, stream, err := parseTopic(topic)
		if err != nil {
			return "other_topic"
		}
		if err := dev.CanSend(id, stream); err != nil {
			return auth.Reason(err)
		}
		return ""
	}
	own := TopicPrefix + dev.ID
	if topic == own || strings.HasPrefix(topic, own+"/") || underPrefix(topic, h.alert) {
		return ""
	}
	if strings.HasPrefix(topic, TopicPrefix) {
		return "wrong_device"
	}
	return "other_topic"
}

// underPrefix reports whether a topic or filter is prefix or under it.
func underPrefix(topic, prefix string) bool {
	return topic == prefix || strings.HasPrefix(topic, prefix+"/")
}
