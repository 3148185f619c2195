// Package hacluster is a member of a holdfast HA pair's cluster: a clustered
// nats-server embedded in the process, with JetStream and the replicated KV
// bucket the pair coordinates through (docs/format/ha.md). Two nodes and a
// witness make the three members; leadership (internal/leader) and log
// replication run on top of a Member's in-process connection.
//
// A Member serves no clients over the network: its client listener is bound to
// 127.0.0.1 at a random port and requires a random token that only the
// member's in-process connection knows. (It cannot go without one: nats-server
// v2.15.2 with DontListen never opens its route listener, since Server.Start
// starts routing only once the client accept loop is ready.)
//
// Members dial each other's route listeners at the addresses in Peers; one
// that learns of a member it has no route to from a third one (nats-server's
// gossip) dials it where that one advertises (Options.Advertise). Routes
// authenticate with the shared member secret and, when configured, TLS with
// certificates verified both ways.
package hacluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/holdfast-edge/holdfast/internal/natslog"
)

// The names the members agree on (docs/format/ha.md).
const (
	// ClusterName is the cluster of members that have a secret.
	ClusterName = "holdfast-ha"
	// OpenClusterName is the cluster of members without a secret. A route's
	// password is checked only by the member that accepts the route, so a
	// member left without its secret would join members that have one
	// through the routes they dial to it; the names differing, each side
	// refuses the other.
	OpenClusterName = "holdfast-ha-nosecret"
	Bucket          = "holdfast-ha"
	// RouteUser is the user name routes authenticate as; the password is the
	// member secret.
	RouteUser = "holdfast"
	// MaxPayload bounds one message between members; replication sends
	// batches of log records.
	MaxPayload = 8 << 20
)

// startTimeout bounds how long Start waits for the server to be running.
const startTimeout = 30 * time.Second

// ErrClosed is returned by a closed Member.
var ErrClosed = errors.New("hacluster: member closed")

// Options configures a member.
type Options struct {
	// Name is the member's server name: unique in the pair and the same
	// across restarts, since JetStream knows its peers by it. Required.
	Name string
	// Listen is the route listener, host:port (--ha-listen). Port 0 picks a
	// free port (see Member.ClusterAddr). Required.
	Listen string
	// Advertise is the route address this member tells the others about when
	// they learn of it from a third member; default the listener's port at
	// the address they see it from. Members dial their configured Peers
	// anyway, so set it only when the listener is reachable at another
	// address (NAT), or to an address nobody listens on so members reach
	// each other only at their configured Peers.
	Advertise string
	// Peers are the other members' route addresses, host:port (--ha-peers).
	Peers []string
	// Secret is the shared member secret: routes authenticate as user
	// RouteUser with it as the password, and a member without it is refused.
	// Empty means routes are not authenticated at all; callers allow that
	// only on loopback.
	Secret string
	// TLS, if set, is the server side of route TLS: peers are verified
	// against ClientCAs (which also serve as RootCAs when those are not
	// set). Its certificate is presented when accepting and, unless
	// GetClientCertificate says otherwise, when dialling a route, so it needs
	// both the server and the client key usage. Optional.
	TLS *tls.Config
	// DataDir holds JetStream's files. Required.
	DataDir string
	// NoJetStream runs the link without JetStream: no KV bucket, only
	// request and reply between members (an active-active pair).
	NoJetStream bool
	// Logger receives nats-server's log lines (natslog). Default: discard.
	Logger *slog.Logger
}

// Validate reports every problem with o.
func (o Options) Validate() error {
	var errs []error
	if o.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if o.Listen == "" {
		errs = append(errs, errors.New("listen address is required"))
	} else if _, _, err := splitHostPort(o.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen: %w", err))
	}
	if o.Advertise != "" {
		if _, _, err := splitHostPort(o.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("advertise: %w", err))
		}
	}
	if len(o.Peers) == 0 {
		errs = append(errs, errors.New("peers are required"))
	}
	for _, p := range o.Peers {
		if _, port, err := splitHostPort(p); err != nil {
			errs = append(errs, fmt.Errorf("peer: %w", err))
		} else if port == 0 {
			errs = append(errs, fmt.Errorf("peer %q: port 0", p))
		}
	}
	if o.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if o.TLS != nil && len(o.TLS.Certificates) == 0 && o.TLS.GetCertificate == nil {
		errs = append(errs, errors.New("route TLS needs a certificate"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hacluster: %w", err)
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	return h, n, nil
}

// Member is a running member of the cluster.
type Member struct {
	ns    *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream // nil with Options.NoJetStream
	token string              // the client listener's, for in-process connections
	name  string

	closeOnce sync.Once
}

// Start runs the member's nats-server in-process, dialling Peers, and
// connects to it. It returns once the server runs; the cluster forms in the
// background (see KV). On error nothing is left running.
func Start(o Options) (*Member, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	token := rand.Text()
	sopts, err := serverOptions(o, token)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("hacluster: %w", err)
	}
	ns, err := natslog.Start(sopts, o.Logger, startTimeout)
	if err != nil {
		return nil, fmt.Errorf("hacluster: %w", err)
	}
	m := &Member{ns: ns}
	m.token, m.name = token, o.Name
	m.nc, err = m.Connect()
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("hacluster: connect in-process: %w", err)
	}
	if o.NoJetStream {
		return m, nil
	}
	if m.js, err = jetstream.New(m.nc); err != nil {
		m.Close()
		return nil, fmt.Errorf("hacluster: %w", err)
	}
	return m, nil
}

func serverOptions(o Options, token string) (*server.Options, error) {
	host, port, _ := splitHostPort(o.Listen)
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as "no cluster"
	}
	routes := make([]*url.URL, 0, len(o.Peers))
	for _, p := range o.Peers {
		u := &url.URL{Scheme: "nats-route", Host: p}
		if o.Secret != "" {
			u.User = url.UserPassword(RouteUser, o.Secret)
		}
		routes = append(routes, u)
	}
	sopts := &server.Options{
		ServerName:    o.Name,
		Host:          "127.0.0.1",
		Port:          server.RANDOM_PORT,
		Authorization: token,
		NoSigs:        true,
		JetStream:     !o.NoJetStream,
		StoreDir:      o.DataDir,
		MaxPayload:    MaxPayload,
		Cluster: server.ClusterOpts{
			Name:        OpenClusterName,
			Host:        host,
			Port:        port,
			Advertise:   o.Advertise,
			NoAdvertise: true,
		},
		Routes: routes,
	}
	if o.Secret != "" {
		sopts.Cluster.Name = ClusterName
		sopts.Cluster.Username = RouteUser
		sopts.Cluster.Password = o.Secret
	}
	if o.TLS != nil {
		tc := o.TLS.Clone()
		if tc.ClientCAs != nil {
			tc.ClientAuth = tls.RequireAndVerifyClientCert
			if tc.RootCAs == nil {
				tc.RootCAs = tc.ClientCAs
			}
		}
		if tc.MinVersion < tls.VersionTLS12 {
			tc.MinVersion = tls.VersionTLS12
		}
		sopts.Cluster.TLSConfig = tc
		sopts.Cluster.TLSTimeout = 2 // seconds
	}
	return sopts, nil
}

// Name is the member's server name.
func (m *Member) Name() string { return m.ns.Name() }

// ClusterAddr is the address the route listener is bound to.
func (m *Member) ClusterAddr() string {
	if a := m.ns.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Conn is the member's in-process connection to its own server.
func (m *Member) Conn() *nats.Conn { return m.nc }

// Connect opens another in-process connection to the member's server, with
// opts besides its own (nats.NoEcho, say). The caller closes it.
func (m *Member) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(m.ns), nats.Token(m.token), nats.Name("holdfast-ha-" + m.name),
		nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("hacluster: connect in-process: %w", err)
	}
	return nc, nil
}

// JetStream is JetStream over Conn.
func (m *Member) JetStream() jetstream.JetStream { return m.js }

// NATS is the embedded server, for tests and status.
func (m *Member) NATS() *server.Server { return m.ns }

// kvRetry is the pause between attempts to reach the bucket.
const kvRetry = 100 * time.Millisecond

// kvAttempt bounds one attempt to reach the bucket.
const kvAttempt = 2 * time.Second

// KV returns the pair's bucket, creating it if no member has yet. It retries
// until it succeeds or ctx ends: the cluster needs a JetStream meta leader
// first, the first creation needs all three members, and after that two of
// the three are enough.
func (m *Member) KV(ctx context.Context) (jetstream.KeyValue, error) {
	cfg := jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "holdfast HA pair: the leader record",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    3,
	}
	var last error
	for {
		if m.nc.IsClosed() {
			return nil, ErrClosed
		}
		actx, cancel := context.WithTimeout(ctx, kvAttempt)
		kv, err := m.js.KeyValue(actx, Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = m.js.CreateKeyValue(actx, cfg)
			if errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = m.js.KeyValue(actx, Bucket)
			}
		}
		cancel()
		if err == nil {
			return kv, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("hacluster: bucket %s: %w (last: %w)", Bucket, ctx.Err(), last)
		case <-time.After(kvRetry):
		}
	}
}

// LeadBucket moves the leadership of the bucket's stream to this member, if
// another member has it, and returns once this member leads it or ctx ends.
// Every write to the bucket goes through the stream's leader, so a primary
// that leads it keeps writing when only the standby is cut off from it; a
// primary calls it after taking over.
func (m *Member) LeadBucket(ctx context.Context) error {
	stream := "KV_" + Bucket
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": m.Name()}})
	if err != nil {
		return err
	}
	var asked time.Time // when the leader was last asked to step down
	for {
		actx, cancel := context.WithTimeout(ctx, kvAttempt)
		st, err := m.js.Stream(actx, stream)
		if err == nil {
			if c := st.CachedInfo().Cluster; c != nil && c.Leader == m.Name() {
				cancel()
				return nil
			}
			// A step-down takes an election; ask again only if that
			// one is long over.
			if time.Since(asked) > time.Second {
				asked = time.Now()
				_, err = m.nc.RequestWithContext(actx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, req)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return fmt.Errorf("hacluster: lead bucket %s: %w (last: %v)", Bucket, ctx.Err(), err)
		case <-time.After(kvRetry):
		}
	}
}

// PeerState is what this member knows of another member.
type PeerState struct {
	Name string `json:"name"`
	// Connected is whether a route to it is up now.
	Connected bool `json:"connected"`
}

// Peers lists the other members this member has a route to or knows from
// JetStream, sorted by name.
func (m *Member) Peers() []PeerState {
	seen := map[string]bool{}
	if rz, err := m.ns.Routez(nil); err == nil {
		for _, r := range rz.Routes {
			// A route the remote has not answered a PING on yet may be one
			// it is about to refuse (a member with the wrong secret sends
			// its INFO before it checks ours): not connected yet.
			if r.RemoteName != "" {
				seen[r.RemoteName] = seen[r.RemoteName] || r.RTT != ""
			}
		}
	}
	if jz, err := m.ns.Jsz(nil); err == nil && jz.Meta != nil {
		for _, p := range jz.Meta.Replicas {
			if _, ok := seen[p.Name]; !ok && p.Name != m.ns.Name() {
				seen[p.Name] = false
			}
		}
	}
	out := make([]PeerState, 0, len(seen))
	for n, c := range seen {
		out = append(out, PeerState{Name: n, Connected: c})
	}
	slices.SortFunc(out, func(a, b PeerState) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Close closes the connection and shuts the server down, waiting until every
// server goroutine has ended. It is safe to call more than once.
func (m *Member) Close() {
	m.closeOnce.Do(func() {
		if m.nc != nil {
			m.nc.Close()
		}
		m.ns.Shutdown()
		m.ns.WaitForShutdown()
	})
}

// Unauthenticated reports whether o would accept routes from anyone who can
// reach a listener beyond this host: no secret, and Listen not on loopback
// ("localhost" or a loopback IP; an empty host is every interface). Callers
// refuse to start so unless told to accept the risk.
func (o Options) Unauthenticated() bool {
	if o.Secret != "" {
		return false
	}
	host, _, err := net.SplitHostPort(o.Listen)
	if err != nil {
		host = o.Listen
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}
