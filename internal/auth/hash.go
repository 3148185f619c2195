package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters. They are written into every hash
// string, so changing them affects only new entries.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8  // lanes
}

// DefaultParams are OWASP's minimum for argon2id, m=19 MiB, t=2, p=1: tens of
// milliseconds on a Raspberry Pi 4, paid once per token and process (then the
// verification is cached).
var DefaultParams = Params{Memory: 19 * 1024, Time: 2, Threads: 1}

const (
	saltLen = 16
	hashLen = 32
	// Bounds on what a file may ask for, so a damaged file cannot make a node
	// hash for ever.
	maxMemory  = 1 << 20 // KiB: 1 GiB
	maxTime    = 16
	maxThreads = 16
)

// phc is a parsed hash string: $argon2id$v=19$m=M,t=T,p=P$salt$hash.
type phc struct {
	p    Params
	salt []byte
	hash []byte
}

var b64 = base64.RawStdEncoding

// hashToken returns the hash string of token with fresh salt.
func hashToken(token string, p Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("random salt: %w", err)
	}
	h := phc{p: p, salt: salt, hash: argon2.IDKey([]byte(token), salt, p.Time, p.Memory, p.Threads, hashLen)}
	return h.String(), nil
}

func (h phc) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.p.Memory, h.p.Time, h.p.Threads, b64.EncodeToString(h.salt), b64.EncodeToString(h.hash))
}

// parsePHC parses a hash string, refusing other algorithms, versions and
// parameters out of bounds.
func parsePHC(s string) (phc, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return phc{}, fmt.Errorf("hash is not $argon2id$v=19$m=...,t=...,p=...$salt$hash")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return phc{}, fmt.Errorf("hash version %q is not v=%d", parts[2], argon2.Version)
	}
	var h phc
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return phc{}, fmt.Errorf("hash parameter %q is not a number", kv)
		}
		switch k {
		case "m":
			h.p.Memory = uint32(n)
		case "t":
			h.p.Time = uint32(n)
		case "p":
			if n > maxThreads {
				return phc{}, fmt.Errorf("hash parameter p=%d is above %d", n, maxThreads)
			}
			h.p.Threads = uint8(n)
		default:
			return phc{}, fmt.Errorf("unknown hash parameter %q", kv)
		}
	}
	switch {
	case h.p.Threads < 1:
		return phc{}, fmt.Errorf("hash parameter p must be 1 to %d", maxThreads)
	case h.p.Time < 1 || h.p.Time > maxTime:
		return phc{}, fmt.Errorf("hash parameter t must be 1 to %d", maxTime)
	case h.p.Memory < 8*uint32(h.p.Threads) || h.p.Memory > maxMemory:
		return phc{}, fmt.Errorf("hash parameter m must be 8*p to %d KiB", maxMemory)
	}
	var err error
	if h.salt, err = b64.DecodeString(parts[4]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 {
		return phc{}, fmt.Errorf("hash salt must be 8 to 64 bytes of unpadded base64")
	}
	if h.hash, err = b64.DecodeString(parts[5]); err != nil || len(h.hash) < 16 || len(h.hash) > 64 {
		return phc{}, fmt.Errorf("hash must be 16 to 64 bytes of unpadded base64")
	}
	return h, nil
}

// verify reports whether token hashes to h, in time independent of where
// they differ.
func (h phc) verify(token string) bool {
	got := argon2.IDKey([]byte(token), h.salt, h.p.Time, h.p.Memory, h.p.Threads, uint32(len(h.hash)))
	return subtle.ConstantTimeCompare(got, h.hash) == 1
}
