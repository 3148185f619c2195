package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// FreeAddr returns a 127.0.0.1 address whose TCP and UDP ports were free a
// moment ago, below the kernel's ephemeral range (32768 on Linux), each
// handed out once per process. Tests fix such addresses before the
// processes that listen on them start; a port from the ephemeral range could
// meanwhile go to any connection of any test running beside them (a
// nats-server's, a client's), so they stay out of it. UDP is checked too:
// the site's gossip (memberlist) takes both.
func FreeAddr(t testing.TB) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 10000 {
		port := 20000 + rand.IntN(12000)
		if portsUsed[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		u.Close()
		portsUsed[port] = true
		return addr
	}
	t.Fatal("no free port below 32000")
	return ""
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)
