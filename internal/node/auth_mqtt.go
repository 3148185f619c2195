package node

import "github.com/holdfast-edge/holdfast/internal/auth"

// mqttGuard returns what the embedded broker authenticates devices with:
// nil (anyone may connect) unless security.devices or security.tls.client_ca
// is set. With client_ca alone, a verified client certificate is the only
// way in, and its name is the device id. The broker shares the node's one
// Authenticator, failure limiter and metrics with HTTP (newAuth).
func (n *Node) mqttGuard() (*auth.Guard, error) {
	if !n.mqttAuthOn() {
		return nil, nil
	}
	return &auth.Guard{Auth: n.auth, Limiter: n.authLimiter, Metrics: n.authMetrics, Transport: auth.TransportMQTT}, nil
}
