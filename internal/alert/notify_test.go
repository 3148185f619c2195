package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// sample returns a firing alert with every field set.
func sample(rule string, sev Severity) Alert {
	return Alert{ID: rule + "/d1/1700000000123", Rule: rule, Severity: sev, State: Firing, Stream: "temperature",
		DeviceID: "d1", Value: 31.5, Threshold: 30, FiredAt: 1700000000123}
}

func mustJSON(t *testing.T, a Alert) string {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLogNotifier(t *testing.T) {
	var buf bytes.Buffer
	n := NewLog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if n.Name() != "log" {
		t.Fatalf("name %q", n.Name())
	}
	resolved := sample("cold", Critical)
	resolved.State, resolved.ResolvedAt, resolved.Value = Resolved, 1700000060000, 29
	for _, a := range []Alert{sample("hot", Warning), sample("hot", Info), sample("fire", Critical), resolved} {
		if err := n.Notify(context.Background(), a); err != nil {
			t.Fatal(err)
		}
	}
	var got []map[string]any
	dec := json.NewDecoder(&buf)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	want := []struct{ level, msg, rule, state string }{
		{"WARN", "alert firing", "hot", "firing"},
		{"WARN", "alert firing", "hot", "firing"},
		{"ERROR", "alert firing", "fire", "firing"},
		{"INFO", "alert resolved", "cold", "resolved"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g["level"] != w.level || g["msg"] != w.msg || g["rule"] != w.rule || g["state"] != w.state ||
			g["device_id"] != "d1" || g["value"] == nil || g["fired_at"] != "2023-11-14T22:13:20.123Z" {
			t.Errorf("record %d: %v, want %+v", i, g, w)
		}
	}
	if got[3]["resolved_at"] != "2023-11-14T22:14:20.000Z" || got[0]["resolved_at"] != nil {
		t.Errorf("resolved_at: %v, %v", got[3]["resolved_at"], got[0]["resolved_at"])
	}
}

// TestMQTTNotifier publishes through a real embedded mochi broker to a real
// client subscribed over TCP.
func TestMQTTNotifier(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	type msg struct {
		topic   string
		payload string
		qos     byte
		retain  bool
	}
	got := make(chan msg, 10)
	c := paho3.NewClient(paho3.NewClientOptions().AddBroker("tcp://" + tcp.Address()).SetClientID("watcher").
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	waitTok := func(tok paho3.Token) {
		t.Helper()
		if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			t.Fatalf("mqtt client: %v", tok.Error())
		}
	}
	waitTok(c.Connect())
	defer c.Disconnect(100)
	waitTok(c.Subscribe("holdfast/alerts/#", 1, func(_ paho3.Client, m paho3.Message) {
		got <- msg{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()}
	}))
	waitTok(c.Subscribe("site7/#", 1, func(_ paho3.Client, m paho3.Message) {
		got <- msg{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()}
	}))

	recv := func() msg {
		t.Helper()
		select {
		case m := <-got:
			return m
		case <-time.After(waitFor):
			t.Fatal("no message")
			panic("unreachable")
		}
	}
	for _, tc := range []struct {
		prefix, topic string
		a             Alert
	}{
		{"", "holdfast/alerts/critical/hot", sample("hot", Critical)},
		{"site7/alerts/", "site7/alerts/info/door.open", sample("door.open", Info)},
	} {
		n := NewMQTT(srv, tc.prefix)
		if n.Name() != "mqtt" {
			t.Fatalf("name %q", n.Name())
		}
		if err := n.Notify(context.Background(), tc.a); err != nil {
			t.Fatal(err)
		}
		m := recv()
		want := msg{tc.topic, mustJSON(t, tc.a), 1, false}
		if m != want {
			t.Errorf("got %+v\nwant %+v", m, want)
		}
	}

	// A broker without the inline client refuses, and the error says where.
	bare := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	err := NewMQTT(bare, "").Notify(context.Background(), sample("hot", Warning))
	if err == nil || !strings.Contains(err.Error(), "holdfast/alerts/warning/hot") {
		t.Fatalf("error %v", err)
	}
}
