package mqttin

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/tlsconf"
	"github.com/holdfast-edge/holdfast/internal/tlsconf/tlstest"
)

// BenchmarkMQTTIngest measures MQTT 5 QoS 1 publishes (each waits for its
// PUBACK) from benchClients devices, without and with authentication and
// TLS, into an in-memory appender: the broker's cost, not the disk's.
// Connecting (one argon2id verification per device) is outside the timing.
// It reports publishes per second and the p99 publish-to-PUBACK latency.
//
//	go test -run '^$' -bench BenchmarkMQTTIngest -benchtime 20000x ./internal/ingest/mqttin
func BenchmarkMQTTIngest(b *testing.B) {
	const benchClients = 8
	ca := tlstest.NewCA(b, "bench CA")
	dir := b.TempDir()
	cert, key := ca.Server(b, "broker").Write(b, dir, "server")
	r, err := tlsconf.Load(cert, key, ca.WriteCA(b, dir, "ca.pem"))
	require.NoError(b, err)
	devicesPath := filepath.Join(dir, "devices.yaml")
	tokens := make([]string, benchClients)
	for i := range tokens {
		tokens[i], err = auth.AddDevice(devicesPath, fmt.Sprintf("dev-%d", i), nil)
		require.NoError(b, err)
	}
	a, err := auth.New(auth.Options{Devices: devicesPath, Logger: discardLogger()})
	require.NoError(b, err)

	for _, mode := range []struct {
		name      string
		auth, tls bool
	}{{"plain", false, false}, {"auth", true, false}, {"tls", false, true}, {"auth+tls", true, true}} {
		b.Run(mode.name, func(b *testing.B) {
			opts := BrokerOptions{Addr: "127.0.0.1:0", Logger: discardLogger()}
			if mode.auth {
				opts.Guard = &auth.Guard{Auth: a, Limiter: auth.NewLimiter(auth.LimiterOptions{}), Transport: auth.TransportMQTT}
			}
			if mode.tls {
				opts.TLSConfig = r.ServerConfig()
			}
			br, err := NewBroker(opts, newFakeAppender(), nil)
			require.NoError(b, err)
			require.NoError(b, br.Start())
			defer br.Close()

			clients := make([]*paho.Client, benchClients)
			for i := range clients {
				var conn net.Conn
				if mode.tls {
					conn, err = tls.Dial("tcp", br.Addr(), &tls.Config{RootCAs: ca.Pool()})
				} else {
					conn, err = net.Dial("tcp", br.Addr())
				}
				require.NoError(b, err)
				c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: time.Minute})
				cp := &paho.Connect{ClientID: fmt.Sprintf("bench-%d", i), KeepAlive: 60, CleanStart: true}
				if mode.auth {
					cp.Username, cp.UsernameFlag = fmt.Sprintf("dev-%d", i), true
					cp.Password, cp.PasswordFlag = []byte(tokens[i]), true
				}
				ca, err := c.Connect(context.Background(), cp)
				require.NoError(b, err)
				require.Equal(b, byte(0), ca.ReasonCode)
				defer c.Disconnect(&paho.Disconnect{})
				clients[i] = c
			}

			lat := make([][]time.Duration, benchClients)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i, c := range clients {
				n := b.N / benchClients
				if i < b.N%benchClients {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					topic := fmt.Sprintf("devices/dev-%d/temp", i)
					for j := range n {
						payload := fmt.Appendf(nil, `{"value":%d,"id":"e-%d"}`, j, j)
						t0 := time.Now()
						pr, err := c.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
						if err != nil || pr.ReasonCode != 0 {
							b.Errorf("publish: %v", err)
							return
						}
						lat[i] = append(lat[i], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) > 0 {
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}

// BenchmarkACLCheck is what authentication adds to each publish: the ACL
// check of an authenticated device's topic.
func BenchmarkACLCheck(b *testing.B) {
	br, err := NewBroker(BrokerOptions{Addr: "127.0.0.1:0", Logger: discardLogger(),
		Guard: &auth.Guard{Transport: auth.TransportMQTT}}, newFakeAppender(), nil)
	require.NoError(b, err)
	defer br.Close()
	h := br.access.(*accessHook)
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	h.conns.add(server)
	h.conns.setDevice(server, auth.Device{ID: "dev-a", Streams: []string{"humidity", "temp"}})
	cl := br.srv.NewClient(server, "bench", "bench", false)
	b.ReportAllocs()
	for b.Loop() {
		if !h.OnACLCheck(cl, "devices/dev-a/temp", true) {
			b.Fatal("denied")
		}
	}
}
