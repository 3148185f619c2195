package cloud

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestSubjectToken(t *testing.T) {
	for _, tc := range []struct{ name, tok string }{
		{"temperature", "temperature"},
		{"température", "température"},
		{"温度", "温度"},
		{"zone.a", "zone%2Ea"},
		{"50% duty", "50%25%20duty"},
		{"*", "%2A"},
		{">", "%3E"},
		{"a>b*c", "a%3Eb%2Ac"},
		{"tab\there", "tab%09here"},
		{"nbsp\u00a0x", "nbsp%C2%A0x"},
		{"line\u2028sep", "line%E2%80%A8sep"},
		{"del\x7f", "del%7F"},
		{"bad\xffutf8", "bad%FFutf8"},
		{"%", "%25"},
		{"", "%"},
		{"node-7", "node-7"},
		{"a:b=c", "a:b=c"},
	} {
		if got := SubjectToken(tc.name); got != tc.tok {
			t.Errorf("SubjectToken(%q) = %q, want %q", tc.name, got, tc.tok)
		}
		got, err := ParseSubjectToken(tc.tok)
		if err != nil || got != tc.name {
			t.Errorf("ParseSubjectToken(%q) = %q, %v, want %q", tc.tok, got, err, tc.name)
		}
	}
}

func TestParseSubjectTokenRejects(t *testing.T) {
	for _, tok := range []string{
		"",       // empty
		"a.b",    // separator
		"*", ">", // wildcards
		"a b",        // space
		"a%2eb",      // lower-case hex
		"%41",        // 'A' needs no escape
		"a%2",        // truncated
		"a%",         // truncated
		"a%G1",       // not hex
		"\xc2%A0",    // half a rune escaped: the encoder escapes whole runes
		"%%",         // bare '%'
		"x\xff",      // raw invalid UTF-8
		"a\u00a0b",   // raw white space
		"50%25 duty", // raw space after a valid escape
	} {
		if name, err := ParseSubjectToken(tok); !errors.Is(err, ErrBadToken) {
			t.Errorf("ParseSubjectToken(%q) = %q, %v; want ErrBadToken", tok, name, err)
		}
	}
}

func FuzzSubjectToken(f *testing.F) {
	for _, s := range []string{"", "temperature", "zone.a", "50% duty", "*", ">", "a\tb", "\xff\xfe", "température", "\u00a0", "%2E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		tok := SubjectToken(name)
		if tok == "" {
			t.Fatalf("SubjectToken(%q) is empty", name)
		}
		if strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("SubjectToken(%q) = %q contains a separator, wildcard or space", name, tok)
		}
		if !utf8.ValidString(tok) {
			t.Fatalf("SubjectToken(%q) = %q is not valid UTF-8", name, tok)
		}
		for _, r := range tok {
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				t.Fatalf("SubjectToken(%q) = %q contains %U", name, tok, r)
			}
		}
		back, err := ParseSubjectToken(tok)
		if err != nil || back != name {
			t.Fatalf("ParseSubjectToken(SubjectToken(%q)) = %q, %v", name, back, err)
		}
		// Decoding arbitrary input either fails or yields the one name whose
		// token it is.
		if dec, err := ParseSubjectToken(name); err == nil && SubjectToken(dec) != name {
			t.Fatalf("ParseSubjectToken(%q) = %q, which encodes to %q", name, dec, SubjectToken(dec))
		}
	})
}

func TestSubject(t *testing.T) {
	s := Subject("node-1", KindEvents, "zone.a temp")
	if want := "holdfast.node-1.events.zone%2Ea%20temp"; s != want {
		t.Fatalf("Subject = %q, want %q", s, want)
	}
	node, kind, stream, err := ParseSubject(s)
	if err != nil || node != "node-1" || kind != KindEvents || stream != "zone.a temp" {
		t.Fatalf("ParseSubject(%q) = %q %q %q %v", s, node, kind, stream, err)
	}
	for _, bad := range []string{"holdfast.n.events", "other.n.events.s", "holdfast.n.nope.s", "holdfast.n.events.a.b", "holdfast.n%2.events.s"} {
		if _, _, _, err := ParseSubject(bad); err == nil {
			t.Errorf("ParseSubject(%q) succeeded", bad)
		}
	}
	for kind, want := range map[string]string{KindEvents: StreamEvents, KindWindows: StreamResults,
		KindAlerts: StreamResults, KindWatermarks: StreamResults, KindLedger: StreamLedger, "x": ""} {
		if got := StreamFor(kind); got != want {
			t.Errorf("StreamFor(%q) = %q, want %q", kind, got, want)
		}
	}
}

func TestNames(t *testing.T) {
	var b Batch
	b.Append(42, []byte{0x03, 1, 2})
	b.Append(50, []byte{0x03, 4})
	m := BatchMsg("n1", KindAlerts, "temp", "critical", &b, false)
	if m.Subject != "holdfast.n1.alerts.temp" || m.Header.Get("Nats-Msg-Id") != "n1:42-50" ||
		m.Header.Get(HeaderFirst) != "42" || m.Header.Get(HeaderLast) != "50" ||
		m.Header.Get(HeaderCount) != "2" || m.Header.Get(HeaderLane) != "critical" ||
		m.Header.Get(HeaderEncoding) != "" {
		t.Fatalf("BatchMsg: %q %v", m.Subject, m.Header)
	}
	for id, want := range map[string]string{"node-7": "node-7", "büro": "b=C3=BCro", "a:b": "a=3Ab", "x_y": "x_y"} {
		if got := ConfigKey(id); got != want {
			t.Errorf("ConfigKey(%q) = %q, want %q", id, got, want)
		}
	}
	if got := SnapshotName("n1", time.UnixMilli(1700000000123)); got != "n1/1700000000123.snap" {
		t.Errorf("SnapshotName = %q", got)
	}
}
