// Package natslog sends an embedded nats-server's log lines to slog: notices
// (the start-up banner, "Server is ready") at debug level, warnings and errors
// as such, all with component=nats.
package natslog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats-server/v2/server"
)

// Attach makes ns log to l. Debug and trace lines are produced only when l
// has debug enabled.
func Attach(ns *server.Server, l *slog.Logger) {
	l = l.With("component", "nats")
	ns.SetLoggerV2(logger{l}, l.Enabled(context.Background(), slog.LevelDebug), false, false)
}

// logger adapts slog to nats-server's Logger.
type logger struct{ l *slog.Logger }

func (n logger) Noticef(format string, v ...any) { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n logger) Warnf(format string, v ...any)   { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n logger) Fatalf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n logger) Errorf(format string, v ...any)  { n.l.Error(fmt.Sprintf(format, v...)) }
func (n logger) Debugf(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
func (n logger) Tracef(format string, v ...any)  { n.l.Debug(fmt.Sprintf(format, v...)) }
