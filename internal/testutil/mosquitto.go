// Package testutil holds helpers shared by tests in several packages: today,
// a real Mosquitto broker on 127.0.0.1 for the tests of MQTT paths.
package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartMosquitto runs a Mosquitto broker on a free 127.0.0.1 port until the
// test ends and returns its address. Queues are unlimited so a slow test
// subscriber loses nothing. Without mosquitto installed the test is skipped,
// or fails when HOLDFAST_REQUIRE_MOSQUITTO is set (as .ci/run sets it).
func StartMosquitto(t testing.TB) string {
	t.Helper()
	addr, _ := RunMosquitto(t, "")
	return addr
}

// RunMosquitto is StartMosquitto on a given address ("" picks a free port),
// also returning a function that stops the broker before the test ends — for
// tests of a broker going away and coming back on the same address.
func RunMosquitto(t testing.TB, addr string) (string, func()) {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("mosquitto"); err != nil {
			if os.Getenv("HOLDFAST_REQUIRE_MOSQUITTO") != "" {
				t.Fatal("mosquitto not installed, and HOLDFAST_REQUIRE_MOSQUITTO is set (as .ci/run sets it)")
			}
			t.Skip("mosquitto not installed; .ci/run installs it")
		}
	}
	if addr == "" {
		// Not a port the kernel picks and this closes again: until mosquitto
		// binds it, the connections of tests running beside this one could
		// take it from the ephemeral range. FreeAddr's are below it.
		addr = FreeAddr(t)
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil,
		"listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages 0\nlog_dest stderr\n",
		port), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return addr, stop
		}
		select {
		case <-exited:
			t.Fatalf("mosquitto exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s: %s", addr, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
