package node

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/holdfast-edge/holdfast/internal/config"
)

// BenchmarkIdleMQTTConnectionMemory measures what an idle device connection
// costs the node (issue 16: ≤ 32 KB): 1 000 MQTT 3.1.1 connections, each
// having published one QoS 1 message and been acknowledged, then idle. It
// reports the heap and goroutine stacks in use per connection after a GC,
// over the node before the connections. The devices are raw TCP sockets in
// the same process, so nothing of a client library is counted.
func BenchmarkIdleMQTTConnectionMemory(b *testing.B) {
	const conns = 1000
	for range b.N {
		cfg := config.Default()
		cfg.DataDir = b.TempDir()
		cfg.HTTP.Addr = "127.0.0.1:0"
		cfg.MQTT.Addr = "127.0.0.1:0"
		n, err := Start(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heap, stack := ms.HeapInuse, ms.StackInuse
		var open []net.Conn
		for i := range conns {
			c, err := net.Dial("tcp", n.MQTTAddr())
			if err != nil {
				b.Fatal(err)
			}
			open = append(open, c)
			id := fmt.Sprintf("idle-%04d", i)
			connect := append([]byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, byte(len(id))}, id...)
			topic := "devices/" + id + "/t"
			publish := append(append([]byte{0x32, byte(2 + len(topic) + 4), 0, byte(len(topic))}, topic...), 0, 1, '4', '2')
			ack := make([]byte, 4)
			for _, p := range [][]byte{connect, publish} {
				if _, err := c.Write(p); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, ack); err != nil { // CONNACK, then PUBACK
					b.Fatal(err)
				}
			}
		}
		time.Sleep(time.Second) // the pipes' goroutines end
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapInuse-heap)/conns, "heap-B/conn")
		b.ReportMetric(float64(ms.StackInuse-stack)/conns, "stack-B/conn")
		for _, c := range open {
			c.Close()
		}
		n.Close()
	}
}
