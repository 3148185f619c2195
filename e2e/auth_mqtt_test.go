package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/auth"
)

// TestMQTTAuthentication runs the binary with security.devices: the embedded
// broker refuses a CONNECT without credentials or with another device's
// token, stores what a device publishes as itself, and refuses, without
// storing anything, a device publishing as another device (MQTT 5 and
// 3.1.1) or under the alert prefix. Each refusal shows in /metrics.
func TestMQTTAuthentication(t *testing.T) {
	dir := t.TempDir()
	devices := filepath.Join(dir, "devices.yaml")
	tokA, err := auth.AddDevice(devices, "dev-a", nil)
	require.NoError(t, err)
	tokB, err := auth.AddDevice(devices, "dev-b", nil)
	require.NoError(t, err)
	tokens := filepath.Join(dir, "tokens.yaml")
	reader, err := auth.AddToken(tokens, "test", auth.RoleRead)
	require.NoError(t, err)
	cfg := filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf("security:\n  devices: %s\n  tokens: %s\n", devices, tokens))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg)
	p.token = reader // the queries below: HTTP answers reads only to an API token

	connect3 := func(id, user, pass string) (mqtt.Client, error) {
		c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + p.mqttAddr).SetClientID(id).SetProtocolVersion(4).
			SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
		tok := c.Connect()
		require.True(t, tok.WaitTimeout(20*time.Second))
		if tok.Error() == nil {
			t.Cleanup(func() { c.Disconnect(100) })
		}
		return c, tok.Error()
	}
	_, err = connect3("anon", "", "")
	require.ErrorIs(t, err, packets.ErrorRefusedNotAuthorised, "no credentials")
	_, err = connect3("thief", "dev-a", tokB)
	require.ErrorIs(t, err, packets.ErrorRefusedBadUsernameOrPassword, "another device's token")

	a3, err := connect3("a3", "dev-a", tokA)
	require.NoError(t, err)
	tok := a3.Publish("devices/dev-a/temp", 1, false, `{"value":1,"id":"a-1"}`)
	require.True(t, tok.WaitTimeout(20*time.Second))
	require.NoError(t, tok.Error())
	waitFor(t, "the event stored", 20*time.Second, func() bool { return len(allEvents(t, p, "")) == 1 })

	// MQTT 5: a spoofed device and a forged alert get PUBACK 0x87.
	conn, err := net.Dial("tcp", p.mqttAddr)
	require.NoError(t, err)
	c5 := paho5.NewClient(paho5.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ca, err := c5.Connect(ctx, &paho5.Connect{ClientID: "a5", KeepAlive: 30, CleanStart: true,
		Username: "dev-a", UsernameFlag: true, Password: []byte(tokA), PasswordFlag: true})
	require.NoError(t, err)
	require.Equal(t, byte(0), ca.ReasonCode)
	defer c5.Disconnect(&paho5.Disconnect{})
	for _, topic := range []string{"devices/dev-b/temp", "holdfast/alerts/dev-a/fake"} {
		pr, err := c5.Publish(ctx, &paho5.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"value":99,"id":"spoof-5"}`)})
		require.NotNil(t, pr, "%s: %v", topic, err)
		require.Equal(t, byte(0x87), pr.ReasonCode, topic)
	}
	// MQTT 3.1.1 QoS 0: dropped; the next message of the connection is stored.
	require.True(t, a3.Publish("devices/dev-b/temp", 0, false, `{"value":99,"id":"spoof-3"}`).WaitTimeout(20*time.Second))
	tok = a3.Publish("devices/dev-a/temp", 1, false, `{"value":2,"id":"a-2"}`)
	require.True(t, tok.WaitTimeout(20*time.Second))
	require.NoError(t, tok.Error())
	waitFor(t, "the second event stored", 20*time.Second, func() bool { return len(allEvents(t, p, "")) == 2 })
	evs := allEvents(t, p, "")
	for _, ev := range evs {
		require.Equal(t, "dev-a", ev.DeviceID)
	}
	lo, hi := min(evs[0].Offset, evs[1].Offset), max(evs[0].Offset, evs[1].Offset)
	require.Equal(t, lo+1, hi, "the refused messages between the two took no offset")

	metrics := get(t, p, "/metrics")
	for _, want := range []string{
		`holdfast_auth_failures_total{reason="no_credentials",transport="mqtt"} 1`,
		`holdfast_auth_failures_total{reason="wrong_device",transport="mqtt"} 1`,
		`holdfast_mqtt_acl_denied_total{action="publish",reason="wrong_device"} 2`,
		`holdfast_mqtt_acl_denied_total{action="publish",reason="alert_prefix"} 1`,
	} {
		require.Contains(t, metrics, want)
	}
}
