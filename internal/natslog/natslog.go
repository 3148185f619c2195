// Package natslog starts holdfast's embedded nats-servers (the cloud, an HA
// member's link) and sends their log lines to slog: notices (the start-up
// banner, "Server is ready") at debug level, warnings and errors as such, all
// with component=nats.
package natslog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Attach makes ns log to l. Debug and trace lines are produced only when l
// has debug enabled.
func Attach(ns *server.Server, l *slog.Logger) {
	l = l.With("component", "nats")
	ns.SetLoggerV2(logger{l}, l.Enabled(context.Background(), slog.LevelDebug), false, false)
}

// Start runs a nats-server with opts in this process, logging to l, and
// returns once it takes connections (and, with opts.JetStream, once
// JetStream runs), or with an error and nothing left running.
func Start(opts *server.Options, l *slog.Logger, timeout time.Duration) (*server.Server, error) {
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	Attach(ns, l)
	ns.Start() // does not block
	fail := func(err error) (*server.Server, error) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, err
	}
	if !ns.ReadyForConnections(timeout) {
		return fail(errors.New("nats-server not ready in time (see log)"))
	}
	if opts.JetStream && !ns.JetStreamEnabled() {
		return fail(errors.New("JetStream failed to start (see log)"))
	}
	return ns, nil
}

// logger adapts slog to nats-server's Logger.
type logger struct{ l *slog.Logger }

func (n logger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n logger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n logger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n logger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n logger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n logger) Tracef(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
