package tlsconf_test

import (
	"crypto/tls"
	"net"
	"testing"

	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// BenchmarkHandshake is one full TLS handshake (ECDSA P-256, TLS 1.3) over
// loopback with the Reloader's per-handshake configuration, against a static
// configuration: what reloadability costs a new connection.
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	ca := tlstest.NewCA(b, "ca")
	cert, key := ca.Server(b, "s").Write(b, dir, "s")
	r, err := tlsconf.Load(cert, key, ca.WriteCA(b, dir, "ca.pem"))
	if err != nil {
		b.Fatal(err)
	}
	kp, _ := tls.LoadX509KeyPair(cert, key)
	for _, bc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"reloader", r.ServerConfig()},
		{"static", &tls.Config{Certificates: []tls.Certificate{kp}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func(c net.Conn) { _ = c.(*tls.Conn).Handshake(); c.Close() }(c)
				}
			}()
			client := &tls.Config{RootCAs: ca.Pool(), ClientSessionCache: nil}
			for b.Loop() {
				c, err := tls.Dial("tcp", ln.Addr().String(), client)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkReload is one Reload: reading and parsing the certificate, key
// and client CA files.
func BenchmarkReload(b *testing.B) {
	dir := b.TempDir()
	ca := tlstest.NewCA(b, "ca")
	cert, key := ca.Server(b, "s").Write(b, dir, "s")
	r, err := tlsconf.Load(cert, key, ca.WriteCA(b, dir, "ca.pem"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := r.Reload(); err != nil {
			b.Fatal(err)
		}
	}
}
