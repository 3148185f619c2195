package uplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/event"
	"github.com/holdfast-edge/holdfast/internal/ingest"
	"github.com/holdfast-edge/holdfast/internal/ingest/mqttin"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

func tlsRecords() []Record {
	e := event.Event{DeviceID: "d", Stream: "s", TS: 1_700_000_000_000, Value: 1}
	return []Record{{Offset: 7, Type: event.TypeEvent, Stream: "s", Payload: e.AppendBinary(nil)}}
}

// TestHTTPSinkClientCertificate sends to a receiver that requires a client
// certificate from its CA.
func TestHTTPSinkClientCertificate(t *testing.T) {
	ca, wrongCA := tlstest.NewCA(t, "cloud CA"), tlstest.NewCA(t, "other CA")
	dir := t.TempDir()
	peer := make(chan string, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		peer <- r.TLS.PeerCertificates[0].Subject.CommonName
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, "receiver").TLS(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool(),
	}
	srv.StartTLS()
	defer srv.Close()
	caFile := ca.WriteCA(t, dir, "ca.pem")
	cert, key := ca.Client(t, "edge-1").Write(t, dir, "client")
	wrongCert, wrongKey := wrongCA.Client(t, "edge-1").Write(t, dir, "wrong")

	send := func(c tlsconf.Client) error {
		tc, err := c.Config()
		require.NoError(t, err)
		sink, err := NewHTTPSink(HTTPSinkOptions{URL: srv.URL, NodeID: "edge-1", TLSConfig: tc})
		require.NoError(t, err)
		defer sink.Close()
		return sink.Send(context.Background(), tlsRecords())
	}

	require.NoError(t, send(tlsconf.Client{CA: caFile, Cert: cert, Key: key}))
	require.Equal(t, "edge-1", <-peer, "the receiver verified the node's certificate")

	err := send(tlsconf.Client{CA: caFile})
	require.Error(t, err, "no client certificate")
	require.False(t, IsPermanent(err), "retryable: %v", err)

	require.Error(t, send(tlsconf.Client{CA: caFile, Cert: wrongCert, Key: wrongKey}), "a client certificate from another CA")

	err = send(tlsconf.Client{Cert: cert, Key: key})
	var ua x509.UnknownAuthorityError
	require.ErrorAs(t, err, &ua, "the system roots do not know the receiver's CA")
}

type discardAppender struct{}

func (discardAppender) Append(context.Context, []event.Event) (ingest.Result, error) {
	return ingest.Result{}, nil
}

// TestMQTTSinkOverTLS bridges to a broker on ssl:// with a username and
// password over TLS.
func TestMQTTSinkOverTLS(t *testing.T) {
	ca, wrongCA := tlstest.NewCA(t, "cloud CA"), tlstest.NewCA(t, "other CA")
	dir := t.TempDir()
	cert, key := ca.Server(t, "broker").Write(t, dir, "server")
	r, err := tlsconf.Load(cert, key, "")
	require.NoError(t, err)
	b, err := mqttin.NewBroker(mqttin.BrokerOptions{Addr: "127.0.0.1:0", TLSConfig: r.ServerConfig()}, discardAppender{}, nil)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	defer b.Close()

	bridge := func(pool *x509.CertPool) (*MQTTSink, error) {
		s, err := NewMQTTSink(MQTTSinkOptions{BrokerURL: "ssl://" + b.Addr(), NodeID: "edge-1", Username: "edge-1",
			Password: "pw", TLSConfig: &tls.Config{RootCAs: pool}})
		require.NoError(t, err)
		return s, s.Resume(context.Background(), nil, nil)
	}
	s, err := bridge(ca.Pool())
	require.NoError(t, err)
	require.NoError(t, s.Send(context.Background(), tlsRecords()), "published and acknowledged over TLS")
	require.NoError(t, s.Close())

	s, err = bridge(wrongCA.Pool())
	var ua x509.UnknownAuthorityError
	require.ErrorAs(t, err, &ua)
	require.NoError(t, s.Close())
}
