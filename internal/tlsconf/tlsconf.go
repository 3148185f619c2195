// Package tlsconf builds the TLS configurations holdfast uses: the server side
// of its HTTP and MQTT listeners, whose certificate and client CA pool are
// swapped in place on Reload (SIGHUP) without dropping a connection, and the
// client side of its uplinks (a CA to trust, a client certificate to show).
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// Reloader serves a certificate, and verifies client certificates against a
// CA pool, both loaded from files and replaced atomically by Reload:
// handshakes after a Reload see the new files, connections already up keep
// what they negotiated. Its methods are safe for concurrent use.
type Reloader struct {
	certFile, keyFile, caFile string
	cur                       atomic.Pointer[loaded]
}

// loaded is one generation of the files.
type loaded struct {
	cert *tls.Certificate
	pool *x509.CertPool // nil: no client certificates requested
}

// Load reads the certificate and key (PEM) and, if clientCA is not "", the CA
// certificates that client certificates must chain to.
func Load(cert, key, clientCA string) (*Reloader, error) {
	if cert == "" || key == "" {
		return nil, errors.New("tlsconf: cert and key are both required")
	}
	r := &Reloader{certFile: cert, keyFile: key, caFile: clientCA}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. On any error the files in force stay in
// force and the error says which file failed.
func (r *Reloader) Reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tlsconf: load %s and %s: %w", r.certFile, r.keyFile, err)
	}
	next := &loaded{cert: &c}
	if r.caFile != "" {
		if next.pool, err = LoadPool(r.caFile); err != nil {
			return err
		}
	}
	r.cur.Store(next)
	return nil
}

// Certificate returns the leaf certificate in force.
func (r *Reloader) Certificate() *x509.Certificate { return r.cur.Load().cert.Leaf }

// ServerConfig returns a server configuration that takes its certificate and
// client CA pool from the files in force at each handshake. With a client CA,
// client certificates are requested and, when given, must chain to it
// (tls.VerifyClientCertIfGiven): clients without one still connect and
// authenticate otherwise. nextProtos are the ALPN protocols offered (for HTTP,
// "h2" and "http/1.1"). Sessions resume across handshakes: the
// per-handshake configuration leaves the session ticket keys to this one.
func (r *Reloader) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			l := r.cur.Load()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   nextProtos,
				Certificates: []tls.Certificate{*l.cert},
			}
			if l.pool != nil {
				c.ClientCAs, c.ClientAuth = l.pool, tls.VerifyClientCertIfGiven
			}
			return c, nil
		},
	}
}

// LoadPool reads PEM CA certificates from file.
func LoadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tlsconf: %s holds no PEM certificate", file)
	}
	return pool, nil
}

// Client is the client side of an uplink's TLS: a CA file to trust instead
// of the system's roots, and a client certificate to present. The zero
// value uses the system roots and presents none.
type Client struct {
	CA, Cert, Key string
}

// IsZero reports whether nothing is set.
func (c Client) IsZero() bool { return c == Client{} }

// Config returns the client configuration, or nil for the zero Client (the
// library's default applies). The files are read now: a missing or bad one
// is an error at start-up, not at the first connection.
func (c Client) Config() (*tls.Config, error) {
	if c.IsZero() {
		return nil, nil
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, errors.New("tlsconf: a client certificate needs both cert and key")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pool, err := LoadPool(c.CA)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if c.Cert != "" {
		kp, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: load %s and %s: %w", c.Cert, c.Key, err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg, nil
}
