package auth

import (
	"fmt"
	"slices"
	"time"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// Role is what an API token may do.
type Role string

const (
	// RoleRead may query events, windows, alerts, status and /metrics.
	RoleRead Role = "read"
	// RoleAdmin may do everything RoleRead may, and the admin endpoints.
	RoleAdmin Role = "admin"
)

// ParseRole returns the role named s: read or admin.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleRead, RoleAdmin:
		return r, nil
	}
	return "", fmt.Errorf("role %q must be read or admin", s)
}

// Allows reports whether a token of role r may do what need requires.
func (r Role) Allows(need Role) bool {
	switch r {
	case RoleAdmin:
		return need == RoleRead || need == RoleAdmin
	case RoleRead:
		return need == RoleRead
	}
	return false
}

// Device is a device entry of the devices file, without its hash.
type Device struct {
	ID    string
	KeyID string
	// Streams the device may send; empty: any.
	Streams []string
	Created time.Time
	Revoked time.Time // zero while active
}

// Active reports whether the entry is not revoked.
func (d Device) Active() bool { return d.Revoked.IsZero() }

// Allows reports whether the device may send events of stream.
func (d Device) Allows(stream string) bool {
	return len(d.Streams) == 0 || slices.Contains(d.Streams, stream)
}

// CanSend checks that the device may send an event of stream as deviceID:
// ErrWrongDevice for another device's id (a device publishes only as itself),
// ErrForbidden for a stream not in its list.
func (d Device) CanSend(deviceID, stream string) error {
	if deviceID != d.ID {
		return fmt.Errorf("%w: device %q sent as %q", ErrWrongDevice, d.ID, deviceID)
	}
	if !d.Allows(stream) {
		return fmt.Errorf("%w: device %q may not send stream %q", ErrForbidden, d.ID, stream)
	}
	return nil
}

// Token is an entry of the tokens file, without its hash.
type Token struct {
	Name    string
	Role    Role
	KeyID   string
	Created time.Time
	Revoked time.Time // zero while active
}

// Active reports whether the entry is not revoked.
func (t Token) Active() bool { return t.Revoked.IsZero() }

func (e deviceEntry) device() Device {
	d := Device{ID: e.ID, KeyID: e.KeyID, Streams: slices.Clone(e.Streams), Created: e.Created}
	if e.Revoked != nil {
		d.Revoked = *e.Revoked
	}
	return d
}

func (e tokenEntry) token() Token {
	t := Token{Name: e.Name, Role: e.Role, KeyID: e.KeyID, Created: e.Created}
	if e.Revoked != nil {
		t.Revoked = *e.Revoked
	}
	return t
}

func now() time.Time { return time.Now().UTC().Truncate(time.Second) }

// AddDevice adds device id to the devices file at path (created 0600 if
// missing), allowed to send only streams (none: any), and returns its new
// token: the only time the token exists outside the device. An id that is
// active is refused with ErrExists.
func AddDevice(path, id string, streams []string) (string, error) {
	return addDevice(path, id, streams, DefaultParams)
}

func addDevice(path, id string, streams []string, p Params) (string, error) {
	if why := event.ValidName(id); why != "" {
		return "", fmt.Errorf("device id %q %s", id, why)
	}
	for _, s := range streams {
		if why := event.ValidName(s); why != "" {
			return "", fmt.Errorf("stream %q %s", s, why)
		}
	}
	var token string
	err := withLock(path, func() error {
		f, _, err := loadDevices(path, true)
		if err != nil {
			return err
		}
		for _, d := range f.Devices {
			if d.ID == id && d.Revoked == nil {
				return fmt.Errorf("%w: device %q is active in %s (revoke it first)", ErrExists, id, path)
			}
		}
		tok, keyID, hash, err := newEntry(KindDevice, p, func(k string) bool {
			return slices.ContainsFunc(f.Devices, func(d deviceEntry) bool { return d.KeyID == k })
		})
		if err != nil {
			return err
		}
		f.Devices = append(f.Devices, deviceEntry{ID: id, KeyID: keyID, Hash: hash, Streams: slices.Clone(streams), Created: now()})
		token = tok
		return writeYAML(path, devicesHeader, f)
	})
	return token, err
}

// newEntry makes a token of kind with a key id that taken does not know,
// and its hash.
func newEntry(kind Kind, p Params, taken func(keyID string) bool) (token, keyID, hash string, err error) {
	for {
		if token, keyID, err = newToken(kind); err != nil {
			return "", "", "", err
		}
		if !taken(keyID) { // 80 random bits: a repeat is astronomically rare
			break
		}
	}
	hash, err = hashToken(token, p)
	return token, keyID, hash, err
}

// RevokeDevice marks device id revoked in the devices file at path; its token
// is refused once a node has reloaded the file. ErrNotFound if the id has no
// active entry.
func RevokeDevice(path, id string) error {
	return withLock(path, func() error {
		f, _, err := loadDevices(path, false)
		if err != nil {
			return err
		}
		at, found := now(), false
		for i := range f.Devices {
			if d := &f.Devices[i]; d.ID == id && d.Revoked == nil {
				d.Revoked, found = &at, true
			}
		}
		if !found {
			return fmt.Errorf("%w: device %q in %s", ErrNotFound, id, path)
		}
		return writeYAML(path, devicesHeader, f)
	})
}

// ListDevices returns the entries of the devices file at path, in file order,
// revoked ones included.
func ListDevices(path string) ([]Device, error) {
	f, _, err := loadDevices(path, false)
	if err != nil {
		return nil, err
	}
	out := make([]Device, len(f.Devices))
	for i, e := range f.Devices {
		out[i] = e.device()
	}
	return out, nil
}

// AddToken adds API token name with role to the tokens file at path (created
// 0600 if missing) and returns the token. A name that is active is refused
// with ErrExists.
func AddToken(path, name string, role Role) (string, error) {
	return addToken(path, name, role, DefaultParams)
}

func addToken(path, name string, role Role, p Params) (string, error) {
	if why := event.ValidName(name); why != "" {
		return "", fmt.Errorf("token name %q %s", name, why)
	}
	if _, err := ParseRole(string(role)); err != nil {
		return "", err
	}
	var token string
	err := withLock(path, func() error {
		f, _, err := loadTokens(path, true)
		if err != nil {
			return err
		}
		for _, t := range f.Tokens {
			if t.Name == name && t.Revoked == nil {
				return fmt.Errorf("%w: token %q is active in %s (revoke it first)", ErrExists, name, path)
			}
		}
		tok, keyID, hash, err := newEntry(KindAPI, p, func(k string) bool {
			return slices.ContainsFunc(f.Tokens, func(t tokenEntry) bool { return t.KeyID == k })
		})
		if err != nil {
			return err
		}
		f.Tokens = append(f.Tokens, tokenEntry{Name: name, Role: role, KeyID: keyID, Hash: hash, Created: now()})
		token = tok
		return writeYAML(path, tokensHeader, f)
	})
	return token, err
}

// RevokeToken marks API token name revoked in the tokens file at path.
// ErrNotFound if the name has no active entry.
func RevokeToken(path, name string) error {
	return withLock(path, func() error {
		f, _, err := loadTokens(path, false)
		if err != nil {
			return err
		}
		at, found := now(), false
		for i := range f.Tokens {
			if t := &f.Tokens[i]; t.Name == name && t.Revoked == nil {
				t.Revoked, found = &at, true
			}
		}
		if !found {
			return fmt.Errorf("%w: token %q in %s", ErrNotFound, name, path)
		}
		return writeYAML(path, tokensHeader, f)
	})
}

// ListTokens returns the entries of the tokens file at path, in file order,
// revoked ones included.
func ListTokens(path string) ([]Token, error) {
	f, _, err := loadTokens(path, false)
	if err != nil {
		return nil, err
	}
	out := make([]Token, len(f.Tokens))
	for i, e := range f.Tokens {
		out[i] = e.token()
	}
	return out, nil
}
