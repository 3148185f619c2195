package auth

import (
	"fmt"
)

// Guard is what a listener calls: it refuses a source that has failed too
// often, verifies the credentials, and counts each refusal by reason, for
// one transport. The zero Limiter and Metrics turn those parts off.
//
//	g := auth.Guard{Auth: a, Limiter: lim, Metrics: m, Transport: auth.TransportHTTP}
//	dev, err := g.Device(r.RemoteAddr, token)          // 401 (429 for ErrRateLimited)
//	err = dev.CanSend(ev.DeviceID, ev.Stream)           // reject the event (403)
type Guard struct {
	Auth      *Authenticator
	Limiter   *Limiter // nil: no limit
	Metrics   *Metrics // nil: not counted
	Transport string   // TransportHTTP, TransportMQTT, TransportAPI
}

// Device checks an HTTP bearer token from addr.
func (g Guard) Device(addr, token string) (Device, error) {
	if err := g.allow(addr); err != nil {
		return Device{}, err
	}
	d, err := g.Auth.Device(token)
	return d, g.done(addr, err)
}

// DeviceLogin checks an MQTT CONNECT's username and password from addr.
func (g Guard) DeviceLogin(addr, id, token string) (Device, error) {
	if err := g.allow(addr); err != nil {
		return Device{}, err
	}
	d, err := g.Auth.DeviceLogin(id, token)
	return d, g.done(addr, err)
}

// API checks an API bearer token from addr and that its role allows need:
// ErrForbidden (counted, but not as a guess) when it does not.
func (g Guard) API(addr, token string, need Role) (Role, error) {
	if err := g.allow(addr); err != nil {
		return "", err
	}
	r, err := g.Auth.API(token)
	if err == nil && !r.Allows(need) {
		err = fmt.Errorf("%w: role %s may not do what needs %s", ErrForbidden, r, need)
	}
	return r, g.done(addr, err)
}

func (g Guard) allow(addr string) error {
	if g.Limiter != nil && !g.Limiter.Allow(addr) {
		g.Metrics.RateLimited(g.Transport)
		return ErrRateLimited
	}
	return nil
}

// done counts a refusal; all but ErrForbidden (a valid token asking too much)
// spend the source's failure budget.
func (g Guard) done(addr string, err error) error {
	if err == nil {
		return nil
	}
	g.Metrics.Failure(g.Transport, err)
	if g.Limiter != nil && Reason(err) != "forbidden" {
		g.Limiter.Failure(addr)
	}
	return err
}

// Refuse counts err, a refusal the listener found before asking the
// Authenticator (a malformed Authorization header, say), as Device would:
// ErrRateLimited if the source is already over its budget.
func (g Guard) Refuse(addr string, err error) error {
	if lerr := g.allow(addr); lerr != nil {
		return lerr
	}
	return g.done(addr, err)
}
