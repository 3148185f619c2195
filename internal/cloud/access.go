package cloud

import (
	"github.com/nats-io/nats.go"
)

// Access is how a node reaches the cloud's NATS server beyond its URL:
// credentials (user and password, a token, or a NATS creds file) and TLS (a
// CA file to trust, a client certificate). The zero value adds nothing.
type Access struct {
	User, Password, Token string
	Creds                 string // a NATS creds file: user JWT and nkey seed
	CA                    string // PEM CAs to trust; implies TLS
	Cert, Key             string // client certificate; implies TLS
}

// Options returns the nats.go options for a: to pass to every nats.Connect
// to the cloud. Files are read at each connection attempt.
func (a Access) Options() []nats.Option {
	var o []nats.Option
	if a.User != "" || a.Password != "" {
		o = append(o, nats.UserInfo(a.User, a.Password))
	}
	if a.Token != "" {
		o = append(o, nats.Token(a.Token))
	}
	if a.Creds != "" {
		o = append(o, nats.UserCredentials(a.Creds))
	}
	if a.CA != "" {
		o = append(o, nats.RootCAs(a.CA))
	}
	if a.Cert != "" {
		o = append(o, nats.ClientCert(a.Cert, a.Key))
	}
	return o
}
