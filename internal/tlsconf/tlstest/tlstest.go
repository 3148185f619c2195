// Package tlstest makes certificates for tests: a CA, server certificates for
// 127.0.0.1 and localhost, client certificates, expired ones, written as PEM
// files. ECDSA P-256 keys keep it fast.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	PEM  []byte
}

// NewCA makes a CA valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Pool is a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf is an issued certificate and its key, PEM-encoded.
type Leaf struct {
	CertPEM, KeyPEM []byte
}

// TLS returns l as a tls.Certificate.
func (l Leaf) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Write writes the certificate and key to dir/name.crt and dir/name.key and
// returns their paths. Each file is replaced by a rename, as an operator's
// tooling would.
func (l Leaf) Write(t testing.TB, dir, name string) (cert, key string) {
	t.Helper()
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeFile(t, cert, l.CertPEM)
	writeFile(t, key, l.KeyPEM)
	return cert, key
}

// WriteCA writes the CA certificate to dir/name and returns its path.
func (ca *CA) WriteCA(t testing.TB, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	writeFile(t, p, ca.PEM)
	return p
}

// Server issues a server certificate for 127.0.0.1, ::1 and localhost
// (dnsNames replace localhost if given).
func (ca *CA) Server(t testing.TB, cn string, dnsNames ...string) Leaf {
	if len(dnsNames) == 0 {
		dnsNames = []string{"localhost"}
	}
	return ca.issue(t, cn, dnsNames, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, x509.ExtKeyUsageServerAuth,
		time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// NamedServer issues a server certificate for dnsName only: no IP address.
func (ca *CA) NamedServer(t testing.TB, dnsName string) Leaf {
	return ca.issue(t, dnsName, []string{dnsName}, nil, x509.ExtKeyUsageServerAuth,
		time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// ExpiredServer issues a server certificate for 127.0.0.1 and localhost that
// expired an hour ago.
func (ca *CA) ExpiredServer(t testing.TB) Leaf {
	return ca.issue(t, "expired", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, x509.ExtKeyUsageServerAuth,
		time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
}

// Client issues a client certificate with common name cn.
func (ca *CA) Client(t testing.TB, cn string) Leaf {
	return ca.issue(t, cn, nil, nil, x509.ExtKeyUsageClientAuth, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// Member issues a certificate for a member of an HA pair's link: 127.0.0.1,
// ::1 and localhost, for both server and client use (a member accepts routes
// and dials them with the same certificate).
func (ca *CA) Member(t testing.TB, cn string) Leaf {
	return ca.issue(t, cn, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, x509.ExtKeyUsageServerAuth,
		time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), x509.ExtKeyUsageClientAuth)
}

func (ca *CA) issue(t testing.TB, cn string, dns []string, ips []net.IP, usage x509.ExtKeyUsage, from, to time.Time, more ...x509.ExtKeyUsage) Leaf {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    from,
		NotAfter:     to,
		DNSNames:     dns,
		IPAddresses:  ips,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  append([]x509.ExtKeyUsage{usage}, more...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writeFile(t testing.TB, path string, data []byte) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
