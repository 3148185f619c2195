package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/alert"
)

// secretConfig sets every secret the config has today to a distinctive value.
func secretConfig() Config {
	cfg := Default()
	cfg.Cloud.URL = "nats://edge:SECRET-NATS-PASS@cloud.example:4222"
	cfg.Cloud.HTTP = &HTTPSink{URL: "https://ingest.example/h?api_key=SECRET-HTTP-QUERY",
		Headers: map[string]string{"Authorization": "Bearer SECRET-HTTP-BEARER"}}
	cfg.Cloud.MQTT = &MQTTSink{Broker: "tcp://bridge:SECRET-BRIDGE-URL-PASS@broker.example:1883", Username: "bridge", Password: "SECRET-BRIDGE-PASS"}
	cfg.MQTT.Mode = "external"
	cfg.MQTT.External.Broker = "tcp://site.local:1883"
	cfg.MQTT.External.Username = "holdfast"
	cfg.MQTT.External.Password = "SECRET-SITE-PASS"
	cfg.Alerts.Notify.Webhooks = []alert.WebhookOptions{{
		Name: "ops", URL: "https://hook:SECRET-HOOK-URL-PASS@ops.example/h",
		Headers: map[string]string{"Authorization": "Bearer SECRET-WEBHOOK", "X-Custom": "SECRET-CUSTOM"},
	}}
	return cfg
}

// TestRedactedHoldsNoSecret: the YAML of Redacted holds none of the secrets,
// the config itself keeps them, and the redacted config read back fails
// validation naming exactly the redacted keys.
func TestRedactedHoldsNoSecret(t *testing.T) {
	cfg := secretConfig()
	require.NoError(t, cfg.Validate())
	data, err := Marshal(Redacted(cfg))
	require.NoError(t, err)
	require.NotContains(t, string(data), "SECRET", "the redacted YAML:\n%s", data)
	require.Equal(t, "Bearer SECRET-WEBHOOK", cfg.Alerts.Notify.Webhooks[0].Headers["Authorization"], "Redacted changed its argument")

	back, err := Parse(data)
	require.NoError(t, err)
	want := []string{
		"alerts.notify.webhooks[0].headers.Authorization",
		"alerts.notify.webhooks[0].headers.X-Custom",
		"alerts.notify.webhooks[0].url",
		"cloud.http.headers.Authorization",
		"cloud.http.url",
		"cloud.mqtt.broker",
		"cloud.mqtt.password",
		"cloud.url",
		"mqtt.external.password",
	}
	require.Equal(t, want, RedactedKeys(back))
	err = back.Validate()
	require.ErrorIs(t, err, ErrRedacted)
	for _, k := range want {
		require.ErrorContains(t, err, k+" is redacted: supply the secret again")
	}
	// Supplying them again makes it valid.
	back.Cloud, back.Alerts, back.MQTT.External.Password = cfg.Cloud, cfg.Alerts, cfg.MQTT.External.Password
	require.NoError(t, back.Validate())
}

// TestSecretFieldsAreTagged: a config field whose name says it holds a
// credential carries the secret tag, so one added later cannot reach the
// registry in plain text by being forgotten.
func TestSecretFieldsAreTagged(t *testing.T) {
	credential := []string{"password", "token", "headers", "url", "broker", "secret", "passphrase"}
	var untagged []string
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type, key string)
	walk = func(t reflect.Type, key string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return
		}
		seen[t] = true
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if slices.Contains(credential, name) && f.Tag.Get("secret") == "" {
				untagged = append(untagged, key+"."+name)
			}
			walk(f.Type, key+"."+name)
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	if len(untagged) > 0 {
		t.Fatalf("fields that look like credentials without a secret tag: %v", untagged)
	}
}
