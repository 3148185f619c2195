// Package node wires holdfast's components into a running edge node and owns
// their lifecycle: the data directory and its lock, the buffer, the store, HTTP
// and MQTT ingest, and the API. It is the one place that knows them all.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/holdfast-edge/holdfast/internal/aggregator"
	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/api"
	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/backup"
	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/engines"
	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
	"github.com/holdfast-edge/holdfast/internal/clock"
	"github.com/holdfast-edge/holdfast/internal/cloud"
	"github.com/holdfast-edge/holdfast/internal/config"
	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/ingest/httpin"
	"github.com/holdfast-edge/holdfast/internal/ingest/mqttin"
	"github.com/holdfast-edge/holdfast/internal/pressure"
	"github.com/holdfast-edge/holdfast/internal/process"
	"github.com/holdfast-edge/holdfast/internal/replica"
	"github.com/holdfast-edge/holdfast/internal/secret"
	"github.com/holdfast-edge/holdfast/internal/site"
	"github.com/holdfast-edge/holdfast/internal/store"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/uplink"
	"github.com/holdfast-edge/holdfast/internal/window"
)

// Version is set at build time with -ldflags "-X .../internal/node.Version=v1.2.3".
var Version = "dev"

// Node is a running edge node.
type Node struct {
	cfg     config.Config
	log     *slog.Logger
	started time.Time
	reg     *prometheus.Registry

	lock  *os.File
	buf   buffer.Engine
	store *store.Store

	proc     *process.Processor
	disp     *alert.Dispatcher
	syncs    []*uplink.Syncer
	lanes    *uplink.LaneRules
	backup   *backup.Backup
	prep     chan prepared // the processor being prepared; nil once taken
	pressure *pressureWatch
	ledger   *lossLedger
	gate     *pressure.Gate // what the buffer's pressure level lets in
	deg      *degradation   // the degradation level and triggers (degrade.go)
	op       *operator      // own alerts, sink-offline, status history (operate.go)
	clock    *clockWatch    // wall-clock jumps, offset from the cloud (clock.go)
	limits   *ingestLimits  // per-device rate limit, hot spots (limits.go)

	tls        *tlsconf.Reloader // the listeners' certificates; nil without security.tls
	stopHUP    func()            // stops reloading them and the credentials on SIGHUP
	tlsReloads *prometheus.CounterVec
	httpLn     net.Listener
	httpSrv    *http.Server
	broker     *mqttin.Broker
	sub        *mqttin.Subscriber
	stopSub    context.CancelFunc

	// auth holds the devices and tokens (nil: no security configured);
	// authLimiter and authMetrics are the node's one failure limiter and
	// counters, shared by every listener (auth.go).
	auth        *auth.Authenticator
	authLimiter *auth.Limiter
	authMetrics *auth.Metrics
	stopAuth    context.CancelFunc // stops watching the files

	// In an HA pair (ha.go): pairOf is the member this node is a mode of;
	// pair the primary's hooks, nil in standby mode. wbuf is the buffer
	// every writer (store, processor, ledger) appends through: fenced by the
	// term on a primary, n.buf otherwise.
	pairOf *Pair
	pair   *pairHooks
	wbuf   buffer.Engine
	// active is the member link of an active-active pair (ha_active.go).
	active *activePair
	// site is this node's place in a site of several nodes (site.go); nil
	// outside one and until the listeners are up.
	site atomic.Pointer[siteMember]
	// siteSync is the aggregator sink's syncer (site.aggregator), siteAccess
	// how the node reaches it; siteReport sends the node's status there.
	siteSync   *uplink.Syncer
	siteAccess cloud.Access
	siteReport *aggregator.Reporter
}

// pairHooks make a node the primary of a pair in term.
type pairHooks struct {
	pair *Pair
	term uint64
	src  *replica.Source
	gate *pairGate
	stop context.CancelFunc
	// lapsed is set once a write was refused for want of the lease: the
	// mode starts again even if the term comes back (ha.go, reconcile).
	lapsed atomic.Bool
}

// Start opens the data directory and starts every component. On error,
// whatever was started is stopped again.
func Start(cfg config.Config, logger *slog.Logger) (*Node, error) {
	return startNode(cfg, logger, nil)
}

// startNode starts a node; with ph, the primary of a pair in ph.term.
func startNode(cfg config.Config, logger *slog.Logger, ph *pairHooks) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: logger, started: time.Now(), reg: prometheus.NewRegistry(), pair: ph, op: newOperator()}
	if ph != nil {
		n.pairOf = ph.pair
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if n.lock, err = lockDir(cfg.DataDir); err != nil {
		return nil, err
	}
	n.ledger = newLossLedger(n.reg, logger.With("component", "ledger"), cfg.DataDir)
	n.gate = pressure.NewGate(func(stream string) string {
		if p := cfg.Streams[stream].Priority; p != "" {
			return p
		}
		return "normal"
	})
	n.deg = n.newDegradation()
	n.buf, err = OpenBuffer(cfg, buffer.Options{
		SegmentBytes:    int64(cfg.Buffer.SegmentBytes),
		MaxBytes:        int64(cfg.Buffer.MaxBytes),
		Logger:          logger.With("component", "buffer"),
		Metrics:         buffer.NewMetrics(n.reg),
		OnUnreadDeleted: n.ledger.onUnreadDeleted,
	})
	if err != nil {
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	n.wbuf = n.buf
	if ph != nil {
		if err := n.startPrimary(); err != nil {
			return nil, err
		}
	}
	go n.ledger.run(n.wbuf)
	if err := n.finishRemovals(); err != nil {
		// The records stay; the next start tries again. Logged, not fatal:
		// a node that cannot compact its buffer still takes data.
		n.log.Error("cannot finish the removal the loss ledger lists; the next start tries again", "err", err)
	}
	if cfg.Windows.Enabled {
		n.prepareProcessing() // the checkpoint loads while the store rebuilds its index
	}
	n.store, err = store.Open(n.wbuf, store.Options{
		DedupWindow:     cfg.Ingest.DedupWindow,
		DedupMaxEntries: cfg.Ingest.DedupMaxEntries,
		NoContentDedup:  cfg.Ingest.DedupWithoutID == "off",
		SnapshotPath:    filepath.Join(cfg.DataDir, "store-index"),
		Logger:          logger.With("component", "store"),
		Metrics:         store.NewMetrics(n.reg),
	})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// Before anything is appended: the lane rules take effect from the
	// log's next offset (docs/format/lanes.md).
	priorities := map[string]string{}
	for name, st := range cfg.Streams {
		priorities[name] = st.Priority
	}
	if n.lanes, err = uplink.LoadLaneRules(vfs.OS, cfg.DataDir, priorities, n.buf.NextOffset()); err != nil {
		return nil, err
	}

	if err := n.loadTLS(); err != nil {
		return nil, err
	}
	if err := n.newAuth(); err != nil {
		return nil, err
	}
	n.handleHUP()
	im := ingest.NewMetrics(n.reg)
	n.op.ingest = im
	limits := event.Limits{MaxFuture: cfg.Ingest.MaxFuture}
	n.startLimits()
	if err := n.startMQTT(im, limits); err != nil {
		return nil, err
	}
	n.clock = newClockWatch(cfg.Clock, clock.System, n.reg, logger.With("component", "clock"), n.raise)
	// Before processing: the alert dispatcher reads n.syncs.
	if err := n.startSync(); err != nil {
		return nil, err
	}
	n.ledger.watchSinks(n.lanes, n.syncs)
	if cfg.Windows.Enabled {
		if err := n.startProcessing(); err != nil {
			return nil, err
		}
	}
	if err := n.startBackup(); err != nil {
		return nil, err
	}
	if err := n.startPressure(); err != nil {
		return nil, err
	}
	if cfg.HA.ActiveActive() {
		if err := n.startActive(); err != nil {
			return nil, err
		}
	}
	if err := n.startHTTP(im, limits); err != nil {
		return nil, err
	}
	if cfg.Site.Enabled() {
		if err := n.startSite(); err != nil {
			return nil, err
		}
	}
	if n.siteSync != nil {
		n.startSiteReport()
	}
	n.startOperator()
	n.clock.start(n.adoptWallClock())
	logger.Info("node ready", "node_id", cfg.NodeID, "http_addr", n.HTTPAddr(), "mqtt_addr", n.MQTTAddr(),
		"data_dir", cfg.DataDir, "next_offset", n.buf.NextOffset(), "version", Version,
		"took", time.Since(n.started).Round(time.Millisecond))
	return n, nil
}

func (n *Node) startMQTT(im *ingest.Metrics, limits event.Limits) error {
	mc := n.cfg.MQTT
	logger := n.log.With("component", "mqtt")
	switch mc.Mode {
	case "embedded":
		guard, err := n.mqttGuard()
		if err != nil {
			return err
		}
		b, err := mqttin.NewBroker(mqttin.BrokerOptions{
			Addr: mc.Addr, MaxPayload: int(mc.MaxPayload), Limits: limits, Logger: logger, Admit: n.admit,
			TLSConfig: n.serverTLS(), Guard: guard, AlertPrefix: n.cfg.Alerts.Notify.MQTTTopicPrefix,
			MaxConnectionsPerSource: mc.MaxConnectionsPerSource, AccessMetrics: mqttin.NewAccessMetrics(n.reg),
			Redirect: n.brokerRedirect(), Owner: n.brokerOwner(), Limiter: n.limits.rate,
		}, n.ingestAppender(), im)
		if err != nil {
			return err
		}
		if err := b.Start(); err != nil {
			return fmt.Errorf("start MQTT broker on mqtt.addr %s: %w", mc.Addr, err)
		}
		n.broker = b
	case "external":
		tc, err := tlsconf.Client{CA: mc.External.CA, Cert: mc.External.Cert, Key: mc.External.Key}.Config()
		if err != nil {
			return fmt.Errorf("mqtt.external: %w", err)
		}
		s, err := mqttin.NewSubscriber(mqttin.SubscriberOptions{
			BrokerURL: mc.External.Broker, ClientID: mc.External.ClientID, TLSConfig: tc,
			Username: mc.External.Username, Password: mc.External.Password,
			Topic: mc.External.Topic, MaxPayload: int(mc.MaxPayload), Limits: limits, Logger: logger, Admit: n.admit,
		}, n.ingestAppender(), im)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := s.Start(ctx); err != nil {
			cancel()
			return fmt.Errorf("start MQTT subscriber: %w", err)
		}
		n.sub, n.stopSub = s, cancel
	}
	return nil
}

// startProcessing starts the stream processor and the alert notifiers, which
// read the alerts it writes from the log.
func (n *Node) startProcessing() error {
	prep := <-n.prep
	n.prep = nil
	if prep.err != nil {
		return fmt.Errorf("start processor: %w", prep.err)
	}
	n.proc = prep.p
	cfg := n.cfg
	primary := []alert.Notifier{alert.NewLog(n.log.With("component", "alert"))}
	for _, w := range cfg.Alerts.Notify.Webhooks {
		primary = append(primary, alert.NewWebhook(w))
	}
	// Alerts go to the broker devices talk to: the embedded one, or the
	// site's in external mode; with MQTT off there is none.
	if prefix := cfg.Alerts.Notify.MQTTTopicPrefix; prefix != "" {
		switch {
		case n.broker != nil:
			primary = append(primary, alert.NewMQTT(n.broker, prefix))
		case n.sub != nil:
			primary = append(primary, alert.NewMQTT(n.sub, prefix))
		default:
			n.log.Info("no MQTT alert notifier: mqtt.mode is off", "mqtt_topic_prefix", prefix)
		}
	}
	var backup alert.Notifier
	if cfg.Alerts.Notify.Backup != nil {
		backup = alert.NewCommand(*cfg.Alerts.Notify.Backup)
	}
	// A notifier without a cursor starts where processing resumes: the
	// alerts since the checkpoint, or, without one, the alerts from now on
	// (docs/format/notify.md).
	from, ok := n.proc.StartOffset()
	if !ok {
		from = n.buf.DurableOffset()
	}
	n.disp = alert.NewDispatcher(alert.DispatcherOptions{
		Log: n.buf, From: from,
		Primary: primary, Backup: backup, Logger: n.log.With("component", "alert"), Registerer: n.reg,
		// While the cloud is unreachable, critical alerts take the backup
		// channel at once as well (DESIGN §5).
		UseBackup: n.cloudOffline,
	})
	n.disp.Start()
	n.proc.Attach(n.store)
	n.proc.Start()
	return nil
}

// prepared is a processor prepared, and its checkpoint restored, in the
// background.
type prepared struct {
	p   *process.Processor
	err error
}

// prepareProcessing builds the processor and loads its checkpoint on another
// goroutine; startProcessing takes it from n.prep.
func (n *Node) prepareProcessing() {
	opts := ProcessOptions(n.cfg)
	opts.Logger, opts.Metrics = n.log.With("component", "process"), process.NewMetrics(n.reg)
	opts.OnDeferred = n.processDeferred
	opts.Pacer = n.deg.pacer
	if n.cfg.Degradation.SpillWindowState {
		opts.SpillDir = spillDir(n.cfg) // not in ProcessOptions: recover must not clear a running node's
	}
	n.prep = make(chan prepared, 1)
	go func() {
		p, err := process.Prepare(n.wbuf, opts)
		if err == nil {
			p.Restore()
		}
		n.prep <- prepared{p, err}
	}()
}

// OpenBuffer opens the buffer engine cfg names (buffer.engine) in its own
// directory of the data dir, <data_dir>/<engine>. A data dir holding another
// engine's buffer is refused: switching engines would start from an empty
// buffer and leave the other's records behind.
func OpenBuffer(cfg config.Config, o buffer.Options) (buffer.Engine, error) {
	name := EngineName(cfg)
	for _, other := range engines.Names {
		if other == name {
			continue
		}
		if entries, err := os.ReadDir(filepath.Join(cfg.DataDir, other)); err == nil && len(entries) > 0 {
			return nil, fmt.Errorf("buffer.engine is %s but %s holds a %s buffer: use another data dir, or the engine it was made with",
				name, cfg.DataDir, other)
		}
	}
	o.Dir = filepath.Join(cfg.DataDir, name)
	return engines.Open(name, o)
}

// EngineName is the buffer engine cfg names, "log" when unset: also the
// buffer's directory in the data dir.
func EngineName(cfg config.Config) string {
	if cfg.Buffer.Engine == "" {
		return "log"
	}
	return cfg.Buffer.Engine
}

// admit applies the buffer's pressure to one event at ingest: "" lets it in;
// otherwise it is kept out and accounted for in the loss ledger.
func (n *Node) admit(stream string) string {
	why := n.deg.gate.Admit(stream) // the degradation level, then the buffer's pressure
	if why == "" {
		why = n.gate.Admit(stream)
	}
	if why != "" {
		n.ledger.keptOut(why, stream)
	}
	return why
}

// startBackup starts the hourly snapshots of the processing state (copies of
// the newest checkpoint, uploaded to the cloud) and publishes the config to the
// cloud's registry — redacted: no secret leaves the node in it.
func (n *Node) startBackup() error {
	yaml, err := config.Marshal(config.Redacted(n.cfg))
	if err != nil {
		return fmt.Errorf("config for the registry: %w", err)
	}
	cloudURL, access := CloudMain(n.cfg.Cloud)
	n.backup = backup.New(backup.Options{
		NodeID: n.cfg.NodeID, CloudURL: cloudURL, Access: access,
		CheckpointDir: ProcessOptions(n.cfg).Checkpoints.Dir, SnapshotDir: filepath.Join(n.cfg.DataDir, "snapshots"),
		Interval: n.cfg.Checkpoints.SnapshotInterval, Keep: n.cfg.Checkpoints.SnapshotKeep,
		ConfigYAML: yaml, Logger: n.log, Registerer: n.reg,
	})
	n.backup.Start()
	return nil
}

// ProcessOptions are the stream processor's options for cfg: windows, rules,
// workers and checkpoints in the data directory. `holdfast recover` replays
// with the same.
func ProcessOptions(cfg config.Config) process.Options {
	lateness := cfg.Windows.AllowedLateness
	if lateness == 0 {
		lateness = window.NoLateness // configured as zero, not left unset
	}
	return process.Options{
		Window: window.Options{
			Sizes: cfg.Windows.Sizes, AllowedLateness: lateness, Accuracy: cfg.Windows.Accuracy,
		},
		Rules:        cfg.Alerts.Rules,
		Workers:      cfg.Windows.Workers,
		IdleTimeout:  cfg.Windows.IdleTimeout,
		LimitedSizes: cfg.Degradation.LimitedWindows,
		SplitAll:     cfg.Windows.Split == "all",
		Checkpoints: process.CheckpointOptions{
			Dir: filepath.Join(cfg.DataDir, "checkpoints"), Interval: cfg.Checkpoints.Interval, Keep: cfg.Checkpoints.Keep,
		},
	}
}

// startSync starts one syncer per configured sink. With a site aggregator
// (site.aggregator) the node syncs there first, and to cloud.url only while
// the aggregator is offline (docs/format/aggregator.md, §5).
func (n *Node) startSync() error {
	c := n.cfg.Cloud
	logger := n.log.With("component", "sync")
	metrics := uplink.NewMetrics(n.reg)
	start := func(sink uplink.Sink, sendTimeout time.Duration) *uplink.Syncer {
		s := uplink.NewSyncer(n.syncLog(), sink, uplink.SyncOptions{
			BatchRecords: c.BatchRecords, MaxDelay: c.MaxDelay, Lanes: n.lanes,
			Logger: logger, Metrics: metrics, SendTimeout: sendTimeout, Pacer: n.deg.pacer,
		})
		s.Start()
		n.syncs = append(n.syncs, s)
		return s
	}
	var primary *uplink.Syncer
	if n.cfg.Site.Aggregator != "" {
		access, err := SiteAccess(n.cfg.Site)
		if err != nil {
			return err
		}
		primary = start(uplink.NewJetStreamSink(uplink.JetStreamOptions{
			URL: n.cfg.Site.Aggregator, NodeID: n.cfg.NodeID, Name: "aggregator", Logger: logger,
			NoCompress: c.Compress != nil && !*c.Compress, Access: access,
		}), 0)
		n.siteSync, n.siteAccess = primary, access
	}
	if c.Synced() {
		direct := uplink.NewJetStreamSink(uplink.JetStreamOptions{
			Links: CloudLinks(c), NodeID: n.cfg.NodeID, EnsureLayout: c.EnsureLayout, Logger: logger, OnClock: n.clock.observe,
			NoCompress: c.Compress != nil && !*c.Compress,
		})
		if primary == nil {
			start(direct, 0)
		} else {
			// Its Send waits for the aggregator as long as that is not
			// offline: only the direct sends are bounded (FallbackOptions).
			start(uplink.NewFallbackSink(primary, direct, uplink.FallbackOptions{Name: "cloud", Logger: logger}), 24*time.Hour)
		}
	}
	if h := c.HTTP; h != nil {
		tc, err := tlsconf.Client{CA: h.CA, Cert: h.Cert, Key: h.Key}.Config()
		if err != nil {
			return fmt.Errorf("cloud.http: %w", err)
		}
		s, err := uplink.NewHTTPSink(uplink.HTTPSinkOptions{
			URL: h.URL, NodeID: n.cfg.NodeID, Headers: h.Headers, Timeout: h.Timeout, Compress: h.Compress,
			TLSConfig: tc,
		})
		if err != nil {
			return err
		}
		start(s, 0)
	}
	if m := c.MQTT; m != nil {
		tc, err := tlsconf.Client{CA: m.CA, Cert: m.Cert, Key: m.Key}.Config()
		if err != nil {
			return fmt.Errorf("cloud.mqtt: %w", err)
		}
		s, err := uplink.NewMQTTSink(uplink.MQTTSinkOptions{
			BrokerURL: m.Broker, ClientID: m.ClientID, Username: m.Username, Password: m.Password, TLSConfig: tc,
			NodeID: n.cfg.NodeID, TopicPrefix: m.TopicPrefix,
		})
		if err != nil {
			return err
		}
		start(s, 0)
	}
	return nil
}

// cloudOffline reports whether a sink is offline: then critical alerts take
// the backup channel at once as well (DESIGN §5). The aggregator sink
// offline does not count while the cloud fallback stands in for it (the
// "cloud" sink then says whether the cloud is reachable).
func (n *Node) cloudOffline() bool {
	for _, s := range n.syncs {
		if s == n.siteSync && n.cfg.Cloud.Synced() {
			continue
		}
		if s.Offline() {
			return true
		}
	}
	return false
}

func (n *Node) startHTTP(im *ingest.Metrics, limits event.Limits) error {
	ln, err := net.Listen("tcp", n.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on http.addr: %w", err)
	}
	n.httpLn = ln
	logger := n.log.With("component", "http")
	opts := api.Options{
		Ingest: httpin.New(httpin.Options{
			MaxBodyBytes: int64(n.cfg.HTTP.MaxBodyBytes), Limits: limits, Logger: logger, Admit: n.admit,
			Auth: n.guard(auth.TransportHTTP), Redirect: n.redirectEvents, Trusted: fromMember, Limiter: n.limits.rate,
		}, n.ingestAppender(), im),
		Auth:     n.guard(auth.TransportAPI),
		Store:    n.store,
		Status:   n.Status,
		Gatherer: n.gatherer(),
	}
	opts.WindowSizes = n.cfg.Windows.Sizes
	opts.Alerts, opts.History = n.alerts, n.op.history.Samples
	if n.proc != nil {
		opts.OpenWindows = n.proc.Open
	}
	if n.active != nil {
		opts.Peer = n.active.peer
		if n.proc != nil {
			opts.OpenPartials = n.proc.OpenPartials
		}
	}
	h := n.degradeQueries(api.New(opts))
	if n.cfg.Site.Enabled() {
		mux := http.NewServeMux()
		mux.Handle("GET /v1/assign", api.RequireRole(n.guard(auth.TransportAPI), auth.RoleRead, http.HandlerFunc(n.assign)))
		mux.Handle("/", h)
		h = n.siteHTTP(mux)
	}
	if n.pair != nil {
		mux := http.NewServeMux()
		mux.Handle("POST /v1/ha/step-down", api.RequireRole(n.guard(auth.TransportAPI), auth.RoleAdmin, http.HandlerFunc(n.stepDown)))
		mux.Handle("/", h)
		h = n.pairRedirect(mux)
	}
	return n.serveHTTP(api.LimitPerSource(h, n.cfg.HTTP.MaxConcurrentPerSource))
}

// serveHTTP serves h on n.httpLn, with TLS when configured.
func (n *Node) serveHTTP(h http.Handler) error {
	ln := n.httpLn
	logger := n.log.With("component", "http")
	n.httpSrv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	serve := func() error { return n.httpSrv.Serve(ln) }
	if n.tls != nil {
		n.httpSrv.TLSConfig = n.tls.ServerConfig("h2", "http/1.1")
		serve = func() error { return n.httpSrv.ServeTLS(ln, "", "") }
	}
	go func() {
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("HTTP server stopped", "err", err)
		}
	}()
	return nil
}

// HTTPAddr returns the address the HTTP listener is bound to.
func (n *Node) HTTPAddr() string {
	if n.httpLn == nil {
		return ""
	}
	return n.httpLn.Addr().String()
}

// MQTTAddr returns the embedded broker's address, or "" if it is not running.
func (n *Node) MQTTAddr() string {
	if n.broker == nil {
		return ""
	}
	return n.broker.Addr()
}

// Status reports the node's state for /v1/status, /healthz and the status page.
func (n *Node) Status() api.Status {
	st := n.buf.Stats()
	s := api.Status{
		NodeID:  n.cfg.NodeID,
		Version: Version,
		Started: n.started.UTC().Format(time.RFC3339),
		Uptime:  time.Since(n.started).Round(time.Second).String(),
		Healthy: true,
		Buffer: api.BufferStatus{
			Engine: n.cfg.Buffer.Engine, Segments: st.Segments, Bytes: st.Bytes,
			MaxBytes: int64(n.cfg.Buffer.MaxBytes), FirstOffset: st.FirstOffset, NextOffset: st.NextOffset,
			QuarantinedRecords: st.QuarantinedRecords,
		},
		MQTT:     api.MQTTStatus{Mode: n.cfg.MQTT.Mode, Addr: n.MQTTAddr()},
		Hotspots: n.hotspots(),
	}
	if n.ledger != nil {
		s.Losses = n.ledger.status()
	}
	if n.store != nil {
		s.QuerySkipped = n.store.Skipped()
	}
	if n.pressure != nil {
		n.pressure.status(&s.Buffer)
	}
	n.degradationStatus(&s)
	if n.proc != nil {
		s.Processing = n.proc.Status()
	}
	for _, sy := range n.syncs {
		s.Sinks = append(s.Sinks, sy.Status())
	}
	if n.backup != nil {
		s.Backup = n.backup.Status()
	}
	if n.disp != nil {
		s.Notifiers = n.disp.Stats().Notifiers
	}
	if err := n.buf.Err(); err != nil {
		s.Healthy = false
		s.Buffer.Error = err.Error()
		s.Problems = append(s.Problems, "buffer failed, nothing is being acknowledged: "+err.Error())
	}
	if n.pairOf != nil {
		s.HA = n.pairOf.status(n)
	}
	if n.active != nil {
		s.HA = n.active.status()
	}
	if sm := n.site.Load(); sm != nil {
		st := sm.status()
		s.Site = st
		for _, m := range st.Members {
			if m.State == site.StateDead {
				s.Problems = append(s.Problems, "site: member "+m.NodeID+" is unreachable; its devices went to the others")
			}
		}
	}
	if h := s.HA; h != nil {
		if h.Role == "primary" && h.StandbyState != "paired" {
			s.Problems = append(s.Problems, "ha: no standby may take over: a loss of this node stops the pair until it returns")
		}
		for _, l := range h.Links {
			if !l.Connected {
				s.Problems = append(s.Problems, "ha: the link to "+l.Member+" is down")
			}
		}
	}
	if n.sub != nil {
		c := n.sub.Connected()
		s.MQTT.Connected = &c
		s.MQTT.Addr = secret.RedactURL(n.cfg.MQTT.External.Broker)
		if !c {
			s.Problems = append(s.Problems, "not connected to MQTT broker "+s.MQTT.Addr)
		}
	}
	n.operatorStatus(&s)
	if n.clock != nil {
		n.clock.status(&s)
	}
	return s
}

// Close stops ingest first, so that nothing new arrives, then closes the
// buffer, waiting for appends in flight to become durable.
func (n *Node) Close() error {
	var errs []error
	n.stopOperator()
	n.clock.close()
	if n.stopHUP != nil {
		n.stopHUP()
	}
	if n.stopAuth != nil {
		n.stopAuth()
	}
	if s := n.site.Swap(nil); s != nil {
		s.close()
	}
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, n.httpSrv.Shutdown(ctx))
		cancel()
	} else if n.httpLn != nil {
		errs = append(errs, n.httpLn.Close())
	}
	if n.active != nil {
		n.active.close()
	}
	if n.broker != nil {
		errs = append(errs, n.broker.Close())
	}
	if n.sub != nil {
		n.stopSub()
		errs = append(errs, n.sub.Close())
	}
	if n.pressure != nil {
		n.pressure.close()
	}
	if n.prep != nil {
		<-n.prep // a start that failed before processing: let the preparation finish
	}
	if n.proc != nil {
		errs = append(errs, n.proc.Close())
	}
	if n.pair != nil && n.pair.stop != nil {
		n.pair.stop()
		if n.pair.src != nil {
			errs = append(errs, n.pair.src.Close())
		}
	}
	if n.backup != nil {
		errs = append(errs, n.backup.Close())
	}
	if n.siteReport != nil {
		errs = append(errs, n.siteReport.Close())
	}
	for _, sy := range n.syncs {
		errs = append(errs, sy.Close())
	}
	if n.disp != nil {
		// The notifiers deliver what the log holds, for up to 10 s; what they
		// do not get to stays after their cursors for the next start.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errs = append(errs, n.disp.Close(ctx))
		cancel()
	}
	if n.store != nil {
		// Nothing appends events any more: the index file written now
		// spares the next start reading the log (format/store-index.md).
		// Without it (a full disk, say) the next start reads the log from
		// the previous one, or all of it: slower, nothing lost, so not a
		// failed shutdown.
		if err := n.store.Close(); err != nil {
			n.log.Warn("store index file not written at shutdown; the next start reads more of the log", "err", err)
		}
	}
	if n.ledger != nil && n.buf != nil {
		n.ledger.close()
	}
	if n.buf != nil {
		errs = append(errs, n.buf.Close())
	}
	if n.lock != nil {
		errs = append(errs, n.lock.Close())
	}
	return errors.Join(errs...)
}

// lockDir takes an exclusive lock on the data directory so that two nodes never
// share one buffer. The kernel drops the lock when the process dies.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another holdfast process: %w", dir, err)
	}
	return f, nil
}
