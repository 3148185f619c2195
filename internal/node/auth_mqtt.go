package node

import (
	"fmt"

	"github.com/holdfast-edge/holdfast/internal/auth"
)

// mqttGuard returns what the embedded broker authenticates devices with:
// nil (anyone may connect) unless security.devices or security.tls.client_ca
// is set. With client_ca alone, a verified client certificate is the only
// way in, and its name is the device id.
//
// Until the node holds one Authenticator, Limiter and Metrics for all its
// listeners (n.auth, n.authLimiter, n.authMetrics), the broker gets its own.
func (n *Node) mqttGuard() (*auth.Guard, error) {
	sec := n.cfg.Security
	if sec.Devices == "" && sec.TLS.ClientCA == "" {
		return nil, nil
	}
	g := &auth.Guard{
		Limiter:   auth.NewLimiter(auth.LimiterOptions{}),
		Metrics:   auth.NewMetrics(n.reg),
		Transport: auth.TransportMQTT,
	}
	if sec.Devices != "" {
		a, err := auth.New(auth.Options{Devices: sec.Devices, Logger: n.log.With("component", "auth")})
		if err != nil {
			return nil, fmt.Errorf("security.devices: %w", err)
		}
		g.Auth = a
	}
	return g, nil
}
