package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/testutil"
)

// TestAlertsReachMQTTSubscribers runs the binary with a critical rule, the
// MQTT notifier on the embedded broker and a backup command. A real MQTT 3.1.1
// client (paho.mqtt.golang) and a real MQTT 5 client (paho.golang), both
// subscribed to holdfast/alerts/#, each receive the firing and the resolved
// alert with their payload; the notifier counts no failure, and the backup
// command, which only a failed primary would call, never runs.
func TestAlertsReachMQTTSubscribers(t *testing.T) {
	dir := t.TempDir()
	cfg, backupOut := alertConfig(t, dir, "")
	p := start(t, filepath.Join(dir, "data"), "--config", cfg)
	checkAlertsOverMQTT(t, p, p.mqttAddr, backupOut)
}

// TestAlertsReachExternalBroker: with mqtt.mode external the node publishes
// its alerts to the site's broker (a real Mosquitto), on the connection it
// subscribes with, where the site's clients receive them.
func TestAlertsReachExternalBroker(t *testing.T) {
	broker := testutil.StartMosquitto(t)
	dir := t.TempDir()
	cfg, backupOut := alertConfig(t, dir, fmt.Sprintf(`
mqtt:
  mode: external
  external: {broker: "tcp://%s", client_id: holdfast-e2e, topic: "devices/+/+"}
`, broker))
	p := start(t, filepath.Join(dir, "data"), "--config", cfg)
	waitFor(t, "the node to connect to the site's broker", 20*time.Second, func() bool {
		var s struct {
			MQTT struct {
				Connected *bool `json:"connected"`
			} `json:"mqtt"`
		}
		return json.Unmarshal([]byte(get(t, p, "/v1/status")), &s) == nil && s.MQTT.Connected != nil && *s.MQTT.Connected
	})
	checkAlertsOverMQTT(t, p, broker, backupOut)
}

// alertConfig writes a config with one critical rule, the MQTT notifier on
// holdfast/alerts, a backup command that appends to the returned file, and
// extra; it returns the config's path and the backup command's output file.
func alertConfig(t *testing.T, dir, extra string) (cfg, backupOut string) {
	backupOut = filepath.Join(dir, "backup.out")
	script := filepath.Join(dir, "sms.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\ncat >> "+backupOut+"\n"), 0o700))
	cfg = filepath.Join(dir, "holdfast.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
alerts:
  rules:
    - {name: freezer-warm, stream: temp, op: ">", threshold: -10, severity: critical}
  notify:
    mqtt_topic_prefix: holdfast/alerts
    backup: {path: %s}
%s`, script, extra))
	return cfg, backupOut
}

// alertMessage is one alert as an MQTT subscriber received it.
type alertMessage struct {
	topic string
	alert map[string]any
}

// checkAlertsOverMQTT subscribes an MQTT 3.1.1 and an MQTT 5 client to
// holdfast/alerts/# on the broker at addr, posts events that fire and resolve
// the rule of alertConfig, and checks that each client got exactly both
// alerts, that the notifier counted them sent and nothing failed, and, once p
// has stopped, that the backup command never ran.
func checkAlertsOverMQTT(t *testing.T, p *proc, addr, backupOut string) {
	t.Helper()
	v3 := make(chan alertMessage, 10)
	decode := func(topic string, payload []byte) alertMessage {
		var a map[string]any
		if err := json.Unmarshal(payload, &a); err != nil {
			a = map[string]any{"undecodable payload": string(payload)}
		}
		return alertMessage{topic, a}
	}
	sub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("ops-board-v3").
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	waitTok := func(tok mqtt.Token) {
		t.Helper()
		require.True(t, tok.WaitTimeout(10*time.Second), "MQTT token timed out")
		require.NoError(t, tok.Error())
	}
	waitTok(sub.Connect())
	defer sub.Disconnect(100)
	waitTok(sub.Subscribe("holdfast/alerts/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		v3 <- decode(m.Topic(), m.Payload())
	}))

	v5 := make(chan alertMessage, 10)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	sub5 := paho5.NewClient(paho5.ClientConfig{Conn: conn, PacketTimeout: 10 * time.Second,
		OnPublishReceived: []func(paho5.PublishReceived) (bool, error){func(r paho5.PublishReceived) (bool, error) {
			v5 <- decode(r.Packet.Topic, r.Packet.Payload)
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = sub5.Connect(ctx, &paho5.Connect{ClientID: "ops-board-v5", KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	defer sub5.Disconnect(&paho5.Disconnect{})
	_, err = sub5.Subscribe(ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "holdfast/alerts/#", QoS: 1}}})
	require.NoError(t, err)

	// Cold, warm (fires), cold (resolves): event times fixed, so the payloads are known.
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)
	var lines []string
	for i, v := range []float64{-18, -5, -20} {
		lines = append(lines, fmt.Sprintf(`{"device_id":"freezer-1","stream":"temp","ts":%d,"value":%v}`,
			t0.Add(time.Duration(i)*time.Second).UnixMilli(), v))
	}
	code, r := post(t, p, "application/x-ndjson", "", []byte(strings.Join(lines, "\n")))
	require.Equal(t, 200, code, "%+v", r)

	firedAt := t0.Add(time.Second).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	resolvedAt := t0.Add(2 * time.Second).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	id := fmt.Sprintf("freezer-warm/freezer-1/%d", t0.Add(time.Second).UnixMilli())
	want := []alertMessage{
		{"holdfast/alerts/critical/freezer-warm", map[string]any{
			"id": id, "rule": "freezer-warm", "severity": "critical", "state": "firing", "stream": "temp",
			"device_id": "freezer-1", "value": -5.0, "threshold": -10.0, "fired_at": firedAt,
		}},
		{"holdfast/alerts/critical/freezer-warm", map[string]any{
			"id": id, "rule": "freezer-warm", "severity": "critical", "state": "resolved", "stream": "temp",
			"device_id": "freezer-1", "value": -20.0, "threshold": -10.0, "fired_at": firedAt, "resolved_at": resolvedAt,
		}},
	}
	for name, ch := range map[string]chan alertMessage{"MQTT 3.1.1": v3, "MQTT 5": v5} {
		for i, w := range want {
			select {
			case got := <-ch:
				require.Equal(t, w, got, "%s subscriber, alert %d", name, i)
			case <-time.After(20 * time.Second):
				t.Fatalf("%s subscriber: alert %d (%s) never arrived:\n%s", name, i, w.alert["state"], p.logs())
			}
		}
	}

	waitFor(t, "both notifications counted as sent", 10*time.Second, func() bool {
		return strings.Contains(get(t, p, "/metrics"), `holdfast_alert_notifications_total{notifier="mqtt",result="sent"} 2`)
	})
	metrics := get(t, p, "/metrics")
	for _, want := range []string{
		`holdfast_alert_notifications_total{notifier="mqtt",result="failed"} 0`,
		`holdfast_alert_notifications_total{notifier="mqtt",result="dropped"} 0`,
		`holdfast_alert_backup_total{reason="failover"} 0`,
	} {
		require.Contains(t, metrics, want)
	}
	p.stop(t) // the dispatcher drains its queues: a backup run would be over by now
	_, err = os.Stat(backupOut)
	require.True(t, os.IsNotExist(err), "the backup command ran although MQTT delivered every alert")
	select {
	case m := <-v3:
		t.Fatalf("unexpected extra alert %+v", m)
	case m := <-v5:
		t.Fatalf("unexpected extra alert %+v", m)
	default:
	}
}
