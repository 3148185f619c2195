// Package auth is holdfast's device and API credentials: the devices and tokens
// files (docs/format/auth.md), the commands' edits of them, and verification of
// the tokens HTTP ingest, the MQTT broker and the API are given.
//
// What it promises:
//   - A token is 256 random bits (crypto/rand), shown once by the command that
//     makes it; the files keep only a public key id and an argon2id hash
//     (golang.org/x/crypto/argon2) in the PHC string format. Files are written
//     0600 and atomically, and a file others may read is refused.
//   - A token names its key (hfd_<key id>_<secret>, hft_<key id>_<secret>), so
//     a bearer token alone finds its entry. A wrong token costs one argon2id
//     hash whether or not its key exists (a dummy hash stands in), hashes are
//     compared in constant time (crypto/subtle), and a verified token is
//     remembered by its SHA-256 so steady traffic does not pay argon2id again.
//   - Device tokens never authorize the API, API tokens never ingest; MQTT's
//     username must be the device the token belongs to.
//   - Rejections are sentinel errors (ErrNoCredentials, ErrUnknown, ErrRevoked,
//     ...) that Metrics counts by reason; Limiter (golang.org/x/time/rate)
//     throttles failed attempts per source address in bounded memory.
//   - Reload and Watch re-read the files; a file that fails to read leaves the
//     previous credentials in force.
//
// A listener holds one Authenticator (New), one Limiter and one Metrics for the
// node, and a Guard per transport that ties them together; Device.CanSend
// checks each event against the device that sent it.
package auth
