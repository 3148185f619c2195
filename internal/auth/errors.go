package auth

import "errors"

// Why a credential was refused. Callers count rejections by Reason(err).
var (
	// ErrNoCredentials: no token (no Authorization header, no MQTT password).
	ErrNoCredentials = errors.New("auth: no credentials")
	// ErrMalformed: something that is not a token, or a scheme other than Bearer.
	ErrMalformed = errors.New("auth: malformed credentials")
	// ErrUnknown: no entry has this token (unknown key id, or a wrong secret).
	ErrUnknown = errors.New("auth: unknown token")
	// ErrRevoked: the token was right but its entry is revoked.
	ErrRevoked = errors.New("auth: token revoked")
	// ErrWrongDevice: a valid device token sent as another device (MQTT
	// username, an event's device_id).
	ErrWrongDevice = errors.New("auth: token belongs to another device")
	// ErrWrongKind: a device token given to the API or an API token given by
	// a device.
	ErrWrongKind = errors.New("auth: wrong kind of token")
	// ErrForbidden: the token is valid but its role or ACL does not allow this.
	ErrForbidden = errors.New("auth: forbidden")
	// ErrRateLimited: too many failures from this source address.
	ErrRateLimited = errors.New("auth: too many failed attempts")
	// ErrNotConfigured: no file for this kind of credential was given.
	ErrNotConfigured = errors.New("auth: no credentials configured")
	// ErrNotFound: a command named a device or token that has no active entry.
	ErrNotFound = errors.New("auth: no such active entry")
	// ErrExists: a command tried to add a device or token that is active.
	ErrExists = errors.New("auth: already exists")
)

// Reason is the metrics label of a rejection: no_credentials, malformed,
// unknown, revoked, wrong_device, wrong_kind, forbidden, rate_limited,
// not_configured, or error for anything else.
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "error"
}

var reasons = []struct {
	err  error
	name string
}{
	{ErrNoCredentials, "no_credentials"},
	{ErrMalformed, "malformed"},
	{ErrUnknown, "unknown"},
	{ErrRevoked, "revoked"},
	{ErrWrongDevice, "wrong_device"},
	{ErrWrongKind, "wrong_kind"},
	{ErrForbidden, "forbidden"},
	{ErrRateLimited, "rate_limited"},
	{ErrNotConfigured, "not_configured"},
}
