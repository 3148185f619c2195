package auth

import (
	"crypto/x509"
	"fmt"
)

// ActiveDevice returns the active device entry whose id is id: ErrRevoked
// if it has only revoked entries, ErrUnknown if none, ErrNotConfigured
// without a devices file. It scans the entries, which is cheap next to a
// TLS handshake, the one place it is called (a client certificate's names).
func (a *Authenticator) ActiveDevice(id string) (Device, error) {
	st := a.state.Load()
	if st.devices == nil {
		return Device{}, ErrNotConfigured
	}
	err := ErrUnknown
	for _, e := range st.devices {
		if e.device.ID != id {
			continue
		}
		if !e.revoked {
			return e.device, nil
		}
		err = ErrRevoked
	}
	return Device{}, err
}

// CertNames are the device ids a verified client certificate may stand
// for: its subject's common name, then its DNS names.
func CertNames(cert *x509.Certificate) []string {
	var names []string
	if cn := cert.Subject.CommonName; cn != "" {
		names = append(names, cn)
	}
	return append(names, cert.DNSNames...)
}

// DeviceCert returns the device a verified client certificate from addr
// stands for: the first of CertNames that is an active device id; if user
// is not "" (an MQTT CONNECT's username), it must be one of the names and
// is the id looked up. With no Authenticator or no devices file, the
// certificate alone vouches for the device: its first name is the id and
// every stream is allowed. A certificate was verified against the client
// CA, so it is not guessed: refusals are counted but do not spend the
// source's failure budget.
func (g Guard) DeviceCert(addr, user string, cert *x509.Certificate) (Device, error) {
	d, err := g.deviceCert(user, cert)
	if err != nil {
		g.Metrics.Failure(g.Transport, err)
	}
	return d, err
}

func (g Guard) deviceCert(user string, cert *x509.Certificate) (Device, error) {
	names := CertNames(cert)
	if user != "" {
		found := false
		for _, n := range names {
			found = found || n == user
		}
		if !found {
			return Device{}, fmt.Errorf("%w: the certificate does not name %q", ErrWrongDevice, user)
		}
		names = []string{user}
	}
	if len(names) == 0 {
		return Device{}, fmt.Errorf("%w: the certificate names no device", ErrNoCredentials)
	}
	if g.Auth == nil || !g.Auth.HasDevices() {
		return Device{ID: names[0]}, nil
	}
	err := ErrUnknown
	for _, n := range names {
		d, e := g.Auth.ActiveDevice(n)
		if e == nil {
			return d, nil
		}
		if e == ErrRevoked {
			err = e
		}
	}
	return Device{}, err
}
