package node

import (
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/config"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.9.9.9:1": true, "[::1]:8080": true, "localhost:8080": true, "LOCALHOST:1": true,
		"0.0.0.0:8080": false, "[::]:8080": false, ":8080": false, "192.168.1.5:8080": false,
		"edge.local:8080": false, "": false, "[::ffff:127.0.0.1]:1": true,
	} {
		require.Equal(t, want, isLoopback(addr), addr)
	}
}

// TestCheckExposure: a listener beyond this host needs authentication for
// it, or security.insecure; the error names both fixes.
func TestCheckExposure(t *testing.T) {
	check := func(mod func(*config.Config)) error {
		cfg := config.Default()
		mod(&cfg)
		n := &Node{cfg: cfg, log: slog.New(slog.DiscardHandler)}
		return n.checkExposure()
	}
	require.NoError(t, check(func(*config.Config) {}), "loopback: zero config")
	err := check(func(c *config.Config) { c.HTTP.Addr = "0.0.0.0:8080" })
	require.ErrorContains(t, err, "http.addr 0.0.0.0:8080")
	require.ErrorContains(t, err, "security.devices")
	require.ErrorContains(t, err, "--insecure")
	err = check(func(c *config.Config) { c.MQTT.Addr = ":1883" })
	require.ErrorContains(t, err, "mqtt.addr :1883")
	require.NoError(t, check(func(c *config.Config) { c.MQTT.Addr = ":1883"; c.MQTT.Mode = "off" }))
	require.NoError(t, check(func(c *config.Config) { c.HTTP.Addr = ":80"; c.MQTT.Addr = ":1883"; c.Security.Insecure = true }))
	require.NoError(t, check(func(c *config.Config) {
		c.HTTP.Addr, c.MQTT.Addr, c.Security.Devices = ":80", ":1883", filepath.Join(t.TempDir(), "d")
	}))
	err = check(func(c *config.Config) {
		c.HTTP.Addr, c.MQTT.Addr, c.Security.Tokens = ":80", ":1883", "tokens.yaml"
	})
	require.ErrorContains(t, err, "mqtt.addr :1883", "API tokens do not authenticate MQTT devices")
	require.NotContains(t, err.Error(), "http.addr")
}

// TestPortClashNamesTheKey: a listen address already taken fails the start
// with the config key that set it, for HTTP and MQTT alike.
func TestPortClashNamesTheKey(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	for key, mod := range map[string]func(*config.Config){
		"http.addr": func(c *config.Config) { c.HTTP.Addr = taken.Addr().String() },
		"mqtt.addr": func(c *config.Config) { c.MQTT.Addr = taken.Addr().String() },
	} {
		cfg := config.Default()
		cfg.DataDir = t.TempDir()
		cfg.HTTP.Addr, cfg.MQTT.Addr = "127.0.0.1:0", "127.0.0.1:0"
		mod(&cfg)
		n, err := Start(cfg, slog.New(slog.DiscardHandler))
		if err == nil {
			n.Close()
		}
		require.ErrorContains(t, err, key, "a taken %s", key)
		require.ErrorContains(t, err, "address already in use")
	}
}
