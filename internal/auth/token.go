package auth

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
)

// Kind is what a token is for.
type Kind string

const (
	// KindDevice tokens (hfd_) authenticate devices: HTTP ingest, MQTT.
	KindDevice Kind = "hfd"
	// KindAPI tokens (hft_) authenticate API clients with a Role.
	KindAPI Kind = "hft"
)

const (
	keyIDBytes  = 10 // 16 base32 characters
	secretBytes = 32 // 52 base32 characters
	keyIDLen    = 16
	secretLen   = 52
	// TokenLen is the length of every token: kind, two underscores, key id
	// and secret.
	TokenLen = 3 + 1 + keyIDLen + 1 + secretLen
)

// b32 is lowercase RFC 4648 base32 without padding: no character needs
// escaping in a header, a URL or an MQTT password, and none is '_'.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newToken returns a fresh token of kind and its key id.
func newToken(kind Kind) (token, keyID string, err error) {
	var b [keyIDBytes + secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("random token: %w", err)
	}
	keyID = b32.EncodeToString(b[:keyIDBytes])
	return string(kind) + "_" + keyID + "_" + b32.EncodeToString(b[keyIDBytes:]), keyID, nil
}

// parseToken splits a token into its kind and key id, checking its shape
// (not its secret). It returns ErrMalformed for anything that is not a token.
func parseToken(token string) (Kind, string, error) {
	if token == "" {
		return "", "", ErrNoCredentials
	}
	if len(token) != TokenLen || token[3] != '_' || token[4+keyIDLen] != '_' {
		return "", "", ErrMalformed
	}
	kind := Kind(token[:3])
	if kind != KindDevice && kind != KindAPI {
		return "", "", ErrMalformed
	}
	keyID := token[4 : 4+keyIDLen]
	if !isB32(keyID) || !isB32(token[5+keyIDLen:]) {
		return "", "", ErrMalformed
	}
	return kind, keyID, nil
}

func isB32(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// validKeyID reports whether s can be a key id in a file.
func validKeyID(s string) bool { return len(s) == keyIDLen && isB32(s) }

// ParseBearer returns the token of an HTTP Authorization header value
// ("Bearer TOKEN", the scheme in any case). It returns ErrNoCredentials for
// an empty header and ErrMalformed for another scheme or a value that is not
// one token.
func ParseBearer(header string) (string, error) {
	if header == "" {
		return "", ErrNoCredentials
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", ErrMalformed
	}
	token = strings.Trim(token, " ")
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", ErrMalformed
	}
	return token, nil
}
