package config

import (
	"fmt"
	"net/url"
	"os"
)

// validateTLS checks the TLS and credential settings of the listeners and
// every uplink: certificates come with their keys, files can be read, and
// TLS settings are not given where no TLS is spoken.
func (c Config) validateTLS() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	readable := func(key, file string) {
		if file == "" {
			return
		}
		f, err := os.Open(file)
		if err != nil {
			bad(key, "%v", err)
			return
		}
		f.Close()
	}
	pair := func(prefix, cert, key string) {
		if (cert == "") != (key == "") {
			bad(prefix+"cert", "cert and key must be set together")
		}
		readable(prefix+"cert", cert)
		readable(prefix+"key", key)
	}
	t := c.Security.TLS
	pair("security.tls.", t.Cert, t.Key)
	readable("security.tls.client_ca", t.ClientCA)
	if t.ClientCA != "" && t.Cert == "" {
		bad("security.tls.client_ca", "needs security.tls.cert and key: client certificates are only asked for over TLS")
	}

	cl := c.Cloud
	pair("cloud.", cl.Cert, cl.Key)
	readable("cloud.ca", cl.CA)
	readable("cloud.creds", cl.Creds)
	if cl.Token != "" && (cl.User != "" || cl.Creds != "") {
		bad("cloud.token", "set either token, user and password, or creds")
	}
	if cl.User != "" && cl.Creds != "" {
		bad("cloud.user", "set either user and password, or creds")
	}
	if h := cl.HTTP; h != nil {
		pair("cloud.http.", h.Cert, h.Key)
		readable("cloud.http.ca", h.CA)
		if u, err := url.Parse(h.URL); err == nil && u.Scheme == "http" && (h.CA != "" || h.Cert != "") {
			bad("cloud.http.ca", "TLS settings need an https URL, not %q", h.URL)
		}
	}
	mqttTLS := func(prefix, broker, ca, cert, key string) {
		pair(prefix, cert, key)
		readable(prefix+"ca", ca)
		if u, err := url.Parse(broker); err == nil && (ca != "" || cert != "") && !IsTLSScheme(u.Scheme) {
			bad(prefix+"ca", "TLS settings need an ssl:// or tls:// broker, not %q", broker)
		}
	}
	if m := cl.MQTT; m != nil {
		mqttTLS("cloud.mqtt.", m.Broker, m.CA, m.Cert, m.Key)
	}
	if c.MQTT.Mode == "external" {
		e := c.MQTT.External
		mqttTLS("mqtt.external.", e.Broker, e.CA, e.Cert, e.Key)
	}
	return errs
}

// IsTLSScheme reports whether an MQTT URL scheme speaks TLS.
func IsTLSScheme(scheme string) bool {
	switch scheme {
	case "ssl", "tls", "mqtts", "tcps", "wss":
		return true
	}
	return false
}
