package cloud

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/holdfast-edge/holdfast/internal/natslog"
)

// DefaultListen is where `holdfast cloud` listens unless told otherwise.
const DefaultListen = "127.0.0.1:4222"

// startTimeout bounds how long Start waits for the server and the layout.
const startTimeout = 30 * time.Second

// Options configures an embedded cloud server.
type Options struct {
	// DataDir holds JetStream's files (DataDir/jetstream/…). Required.
	DataDir string
	// Listen is the client address, host:port; default DefaultListen. Port 0
	// picks a free port (see Server.URL).
	Listen string
	// Duplicates is the de-duplication window of the data streams; default
	// DefaultDuplicates.
	Duplicates time.Duration
	// MaxAge, MaxBytes and MaxMsgs limit each data stream; 0 is unlimited.
	MaxAge   time.Duration
	MaxBytes int64
	MaxMsgs  int64
	// Token, if set, is required of every client (nats-server's
	// authorization token); in-process connections of this package send it.
	Token string
	// TLS, if set, makes the client listener TLS (nats-server's TLSConfig).
	TLS *tls.Config
	// Logger receives nats-server's log lines with component=nats; its
	// notices (start-up banner, "Server is ready") at debug level, warnings
	// and errors as such. Default: discard.
	Logger *slog.Logger
}

func (o Options) layout() LayoutOptions {
	return LayoutOptions{Duplicates: o.Duplicates, MaxAge: o.MaxAge, MaxBytes: o.MaxBytes, MaxMsgs: o.MaxMsgs}
}

// Validate reports every problem with o.
func (o Options) Validate() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if o.Listen != "" {
		if _, _, err := splitListen(o.Listen); err != nil {
			errs = append(errs, err)
		}
	}
	if err := o.layout().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cloud: %w", err)
	}
	return nil
}

func splitListen(addr string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("listen %q: %w", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("listen %q: bad port", addr)
	}
	if n == 0 {
		n = server.RANDOM_PORT // nats-server reads 0 as "the default port"
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, n, nil
}

// Server is an in-process nats-server with JetStream and the holdfast layout.
type Server struct {
	ns        *server.Server
	token     string
	closeOnce sync.Once
}

// Start runs nats-server in-process with JetStream storing under o.DataDir,
// waits until it accepts clients, ensures the layout (EnsureLayout) and waits
// until HOLDFAST_CONFIG sources the config bucket. On success the server is
// ready for nodes; on error nothing is left running.
func Start(o Options) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	host, port, _ := splitListen(o.Listen)
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	ns, err := natslog.Start(&server.Options{
		ServerName:    "holdfast-cloud",
		Host:          host,
		Port:          port,
		JetStream:     true,
		StoreDir:      o.DataDir,
		NoSigs:        true,
		Authorization: o.Token,
		TLSConfig:     o.TLS,
		TLS:           o.TLS != nil,
		AllowNonTLS:   false,
	}, o.Logger, startTimeout)
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	s := &Server{ns: ns, token: o.Token}
	if err := s.ensureLayout(o.layout()); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) ensureLayout(o LayoutOptions) error {
	nc, err := nats.Connect("", nats.InProcessServer(s.ns), nats.Name("holdfast-cloud-layout"), nats.Token(s.token))
	if err != nil {
		return fmt.Errorf("cloud: connect in-process: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("cloud: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := EnsureLayout(ctx, js, o); err != nil {
		return err
	}
	return waitSourcing(ctx, js)
}

// waitSourcing waits until HOLDFAST_CONFIG has heard from the bucket it
// sources. nats-server sets the sourcing up asynchronously, and the goroutine
// that waits for the answer (stream.trySetupSourceConsumer) is not one the
// server's shutdown waits for: a Close while it waits would leave it running
// for up to 30 s. Once the source is active that goroutine has ended.
func waitSourcing(ctx context.Context, js jetstream.JetStream) error {
	for {
		st, err := js.Stream(ctx, StreamConfig)
		if err != nil {
			return fmt.Errorf("cloud: stream %s: %w", StreamConfig, err)
		}
		info := st.CachedInfo()
		if len(info.Sources) > 0 && info.Sources[0].Active >= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cloud: %s is not sourcing %s: %w", StreamConfig, "KV_"+ConfigBucket, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// URL is the client URL, e.g. nats://127.0.0.1:4222, with the actual port.
func (s *Server) URL() string { return s.ns.ClientURL() }

// Connect opens an in-process client connection, with the server's token.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect("", append([]nats.Option{nats.InProcessServer(s.ns), nats.Name(name), nats.Token(s.token)}, opts...)...)
}

// NATS is the embedded server, for in-process connections
// (nats.InProcessServer) and tests.
func (s *Server) NATS() *server.Server { return s.ns }

// Close shuts the server down gracefully and waits until it has stopped:
// JetStream's files are flushed and closed, every server goroutine has ended.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	})
	return nil
}
