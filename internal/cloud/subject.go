package cloud

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Kinds: the third subject token, one per kind of synced record.
const (
	KindEvents     = "events"
	KindWindows    = "windows"
	KindAlerts     = "alerts"
	KindLedger     = "ledger"
	KindWatermarks = "watermarks"
	KindLate       = "late"
)

// JetStream names of the layout (docs/format/cloud.md).
const (
	StreamEvents    = "HOLDFAST_EVENTS"
	StreamResults   = "HOLDFAST_RESULTS"
	StreamLedger    = "HOLDFAST_LEDGER"
	StreamConfig    = "HOLDFAST_CONFIG"
	ConfigBucket    = "holdfast-config"
	SnapshotsBucket = "holdfast-snapshots"
)

const subjectPrefix = "holdfast"

// ErrBadToken reports a subject token that SubjectToken would not have written.
var ErrBadToken = errors.New("cloud: malformed subject token")

// StreamFor returns the JetStream stream that holds records of kind, or "" for
// an unknown kind.
func StreamFor(kind string) string {
	switch kind {
	case KindEvents:
		return StreamEvents
	case KindWindows, KindAlerts, KindWatermarks, KindLate:
		return StreamResults
	case KindLedger:
		return StreamLedger
	}
	return ""
}

// Subject returns holdfast.<node>.<kind>.<stream>, with node and stream encoded
// by SubjectToken.
func Subject(nodeID, kind, stream string) string {
	return subjectPrefix + "." + SubjectToken(nodeID) + "." + kind + "." + SubjectToken(stream)
}

// ParseSubject is the inverse of Subject for a known kind.
func ParseSubject(subject string) (nodeID, kind, stream string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != subjectPrefix || StreamFor(parts[2]) == "" {
		return "", "", "", fmt.Errorf("cloud: subject %q is not holdfast.<node>.<kind>.<stream>", subject)
	}
	if nodeID, err = ParseSubjectToken(parts[1]); err != nil {
		return "", "", "", err
	}
	if stream, err = ParseSubjectToken(parts[3]); err != nil {
		return "", "", "", err
	}
	return nodeID, parts[2], stream, nil
}

// NodeFilter is the subject filter matching every subject of one node.
func NodeFilter(nodeID string) string {
	return subjectPrefix + "." + SubjectToken(nodeID) + ".>"
}

const upperHex = "0123456789ABCDEF"

// SubjectToken encodes name as one NATS subject token: never empty, never
// containing '.', '*', '>', '%' unescaped, white space or control bytes, always
// valid UTF-8. The encoding is canonical and reversed by ParseSubjectToken.
func SubjectToken(name string) string {
	if name == "" {
		return "%"
	}
	clean := true
	for i := 0; i < len(name); {
		r, n := utf8.DecodeRuneInString(name[i:])
		if needsEscape(r, n) {
			clean = false
			break
		}
		i += n
	}
	if clean {
		return name
	}
	var b strings.Builder
	b.Grow(len(name) + 8)
	for i := 0; i < len(name); {
		r, n := utf8.DecodeRuneInString(name[i:])
		if needsEscape(r, n) {
			for _, c := range []byte(name[i : i+n]) {
				b.WriteByte('%')
				b.WriteByte(upperHex[c>>4])
				b.WriteByte(upperHex[c&0xf])
			}
		} else {
			b.WriteString(name[i : i+n])
		}
		i += n
	}
	return b.String()
}

// needsEscape reports whether the rune r, n bytes long as decoded by
// utf8.DecodeRuneInString, is written percent-escaped.
func needsEscape(r rune, n int) bool {
	switch {
	case r == utf8.RuneError && n == 1: // a byte that is not valid UTF-8
		return true
	case r <= ' ', r == 0x7f, r == '%', r == '.', r == '*', r == '>':
		return true
	}
	return unicode.IsSpace(r) || unicode.IsControl(r)
}

// ParseSubjectToken decodes a token written by SubjectToken. It rejects every
// other string with ErrBadToken, so each name has exactly one token.
func ParseSubjectToken(tok string) (string, error) {
	if tok == "%" {
		return "", nil
	}
	if tok == "" {
		return "", fmt.Errorf("%w: empty", ErrBadToken)
	}
	if !strings.Contains(tok, "%") {
		if SubjectToken(tok) != tok {
			return "", fmt.Errorf("%w: %q has bytes that must be escaped", ErrBadToken, tok)
		}
		return tok, nil
	}
	out := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if c != '%' {
			out = append(out, c)
			continue
		}
		if i+2 >= len(tok) {
			return "", fmt.Errorf("%w: %q: truncated escape at %d", ErrBadToken, tok, i)
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("%w: %q: bad escape at %d", ErrBadToken, tok, i)
		}
		out = append(out, byte(hi<<4|lo))
		i += 2
	}
	name := string(out)
	if SubjectToken(name) != tok {
		return "", fmt.Errorf("%w: %q is not the canonical encoding of %q", ErrBadToken, tok, name)
	}
	return name, nil
}

// unhex decodes one upper-case hex digit, or returns -1.
func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// ConfigKey returns the holdfast-config key of a node: bytes outside
// A–Z a–z 0–9 '-' '_' are written '=' and two upper-case hex digits.
func ConfigKey(nodeID string) string {
	var b strings.Builder
	for i := 0; i < len(nodeID); i++ {
		c := nodeID[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			b.WriteByte('=')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&0xf])
		}
	}
	return b.String()
}

// SnapshotName returns the object name of a node's snapshot taken at t:
// <node_id>/<unix_ms>.snap.
func SnapshotName(nodeID string, t time.Time) string {
	return nodeID + "/" + strconv.FormatInt(t.UnixMilli(), 10) + ".snap"
}
