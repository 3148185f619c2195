package tlsconf_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// handshake dials a TLS server running cfg and returns the common name of
// the certificate it served, or the handshake's error.
func handshake(t *testing.T, cfg *tls.Config, client *tls.Config) (string, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			_, _ = c.Write([]byte("x")) // the client reads this, or the server's alert
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// resumed reports whether a connection with client resumed a session.
func resumed(t *testing.T, cfg, client *tls.Config) bool {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			_ = c.(*tls.Conn).Handshake()
			_, _ = c.Write([]byte("x"))
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Read(make([]byte, 1))
	require.NoError(t, err)
	return c.ConnectionState().DidResume
}

func TestReloaderSwapsCertificateAndClientCA(t *testing.T) {
	dir := t.TempDir()
	ca, ca2 := tlstest.NewCA(t, "one"), tlstest.NewCA(t, "two")
	cert, key := ca.Server(t, "first").Write(t, dir, "server")
	caFile := ca.WriteCA(t, dir, "client-ca.pem")
	r, err := tlsconf.Load(cert, key, caFile)
	require.NoError(t, err)
	cfg := r.ServerConfig()
	both := ca.Pool()
	both.AddCert(ca2.Cert)

	cn, err := handshake(t, cfg, &tls.Config{RootCAs: both})
	require.NoError(t, err)
	require.Equal(t, "first", cn)

	// Sessions resume between reloads.
	resuming := &tls.Config{RootCAs: both, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	_, err = handshake(t, cfg, resuming)
	require.NoError(t, err)
	require.True(t, resumed(t, cfg, resuming), "the second connection resumes the first's session")

	// A client certificate from the second CA: refused until the client CA
	// file names it.
	c2 := ca2.Client(t, "dev").TLS(t)
	withC2 := &tls.Config{RootCAs: both, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c2, nil }}
	_, err = handshake(t, cfg, withC2)
	require.Error(t, err)

	ca2.Server(t, "second").Write(t, dir, "server")
	ca2.WriteCA(t, dir, "client-ca.pem")
	require.NoError(t, r.Reload())
	cn, err = handshake(t, cfg, withC2)
	require.NoError(t, err, "the same *tls.Config sees the reloaded files")
	require.Equal(t, "second", cn)
	require.Equal(t, "second", r.Certificate().Subject.CommonName)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "server.key"), []byte("garbage"), 0o600))
	require.ErrorContains(t, r.Reload(), "server.key")
	cn, err = handshake(t, cfg, withC2)
	require.NoError(t, err)
	require.Equal(t, "second", cn, "a failed reload keeps the files in force")
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := tlsconf.Load("", "", "")
	require.Error(t, err)
	_, err = tlsconf.Load(filepath.Join(dir, "a"), filepath.Join(dir, "b"), "")
	require.Error(t, err)
	ca := tlstest.NewCA(t, "ca")
	cert, key := ca.Server(t, "s").Write(t, dir, "s")
	_, err = tlsconf.Load(cert, key, cert+".missing")
	require.Error(t, err)
	_, err = tlsconf.Load(cert, key, key) // a key is no CA certificate
	require.ErrorContains(t, err, "no PEM certificate")
}

func TestClientConfig(t *testing.T) {
	cfg, err := tlsconf.Client{}.Config()
	require.NoError(t, err)
	require.Nil(t, cfg, "nothing set: the library's default")

	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	cert, key := ca.Client(t, "node").Write(t, dir, "c")
	_, err = tlsconf.Client{Cert: cert}.Config()
	require.Error(t, err)
	cfg, err = tlsconf.Client{CA: ca.WriteCA(t, dir, "ca.pem"), Cert: cert, Key: key}.Config()
	require.NoError(t, err)
	require.Len(t, cfg.Certificates, 1)
	require.NotNil(t, cfg.RootCAs)

	srv := ca.Server(t, "srv").TLS(t)
	cn, err := handshake(t, &tls.Config{Certificates: []tls.Certificate{srv}}, cfg)
	require.NoError(t, err)
	require.Equal(t, "srv", cn)
}
