package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/holdfast-edge/holdfast/internal/auth"
)

// authWatchInterval is how often the node looks for edits of the devices and
// tokens files (`holdfast device add`, `holdfast token revoke`, ...).
const authWatchInterval = 2 * time.Second

// authOn reports whether the node authenticates HTTP: a devices or tokens
// file, or client certificates. Then ingest needs a device's credentials and
// every API route but /healthz an API token.
func (n *Node) authOn() bool {
	s := n.cfg.Security
	return s.Devices != "" || s.Tokens != "" || s.TLS.ClientCA != ""
}

// mqttAuthOn reports whether the embedded broker authenticates devices.
func (n *Node) mqttAuthOn() bool {
	s := n.cfg.Security
	return s.Devices != "" || s.TLS.ClientCA != ""
}

// newAuth refuses to expose a listener without authentication (unless
// security.insecure), then loads the devices and tokens files into n.auth
// with the node's one failure limiter and metrics, and watches the files for
// edits. Without security it leaves n.auth nil: the listeners are open.
func (n *Node) newAuth() error {
	if err := n.checkExposure(); err != nil {
		return err
	}
	n.authMetrics = auth.NewMetrics(n.reg)
	n.authLimiter = auth.NewLimiter(auth.LimiterOptions{})
	if !n.authOn() && !n.mqttAuthOn() {
		return nil
	}
	s := n.cfg.Security
	a, err := auth.New(auth.Options{Devices: s.Devices, Tokens: s.Tokens, Logger: n.log.With("component", "auth")})
	if err != nil {
		return fmt.Errorf("security: %w", err)
	}
	n.auth = a
	ctx, cancel := context.WithCancel(context.Background())
	n.stopAuth = cancel
	go a.Watch(ctx, authWatchInterval)
	devices, tokens := a.Entries()
	n.log.Info("authentication on", "devices_file", s.Devices, "active_devices", devices,
		"tokens_file", s.Tokens, "active_tokens", tokens, "client_ca", s.TLS.ClientCA)
	return nil
}

// guard is the auth.Guard of one transport; nil with authentication off.
func (n *Node) guard(transport string) *auth.Guard {
	if n.auth == nil || !n.authOn() {
		return nil
	}
	return &auth.Guard{Auth: n.auth, Limiter: n.authLimiter, Metrics: n.authMetrics, Transport: transport}
}

// ReloadAuth reads the devices and tokens files again (SIGHUP does, besides
// the file watch). On error the credentials in force stay in force.
func (n *Node) ReloadAuth() error {
	if n.auth == nil {
		return nil
	}
	if err := n.auth.Reload(); err != nil {
		n.log.Error("credentials not reloaded on SIGHUP: the previous ones stay in force", "err", err)
		return err
	}
	d, t := n.auth.Entries()
	n.log.Info("credentials reloaded on SIGHUP", "devices", d, "tokens", t)
	return nil
}

// handleHUP reloads the TLS files and the credentials on SIGHUP. With
// neither configured, SIGHUP keeps its default action.
func (n *Node) handleHUP() {
	if n.tls == nil && n.auth == nil {
		return
	}
	hup := make(chan os.Signal, 1)
	done := make(chan struct{})
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-hup:
				_ = n.ReloadTLS()
				_ = n.ReloadAuth()
			case <-done:
				return
			}
		}
	}()
	n.stopHUP = func() {
		signal.Stop(hup)
		close(done)
	}
}

// checkExposure refuses a listener on a non-loopback address with no
// authentication for it, unless security.insecure (--insecure) accepts the
// risk; then it warns loudly.
func (n *Node) checkExposure() error {
	var open []string
	if a := n.cfg.HTTP.Addr; !isLoopback(a) && !n.authOn() {
		open = append(open, "http.addr "+a)
	}
	if a := n.cfg.MQTT.Addr; n.cfg.MQTT.Mode == "embedded" && !isLoopback(a) && !n.mqttAuthOn() {
		open = append(open, "mqtt.addr "+a)
	}
	if len(open) == 0 {
		return nil
	}
	if n.cfg.Security.Insecure {
		n.log.Warn("INSECURE: listening beyond this host with no authentication: anyone who can reach the node may send and read its data",
			"listeners", strings.Join(open, ", "), "fix", "security.devices and security.tokens (and security.tls)")
		return nil
	}
	return fmt.Errorf("%s: listening beyond this host with no authentication; "+
		"set security.devices (holdfast device add) and security.tokens (holdfast token add), with security.tls for TLS, "+
		"or accept the risk with --insecure (security.insecure: true)", strings.Join(open, ", "))
}

// isLoopback reports whether a listen address reaches only this host:
// localhost or a loopback IP. "" or ":8080" (every interface), 0.0.0.0, ::,
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
