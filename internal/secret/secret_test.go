package secret

import (
	"slices"
	"strings"
	"testing"
)

type inner struct {
	User     string            `yaml:"user"`
	Password string            `yaml:"password" secret:"true"`
	Headers  map[string]string `yaml:"headers,omitempty" secret:"true"`
	hidden   string
}

type outer struct {
	URL    string   `yaml:"url" secret:"url"`
	Plain  string   `yaml:"plain"`
	Tokens []string `yaml:"tokens" secret:"true"`
	Hooks  []inner  `yaml:"hooks"`
	Ptr    *inner   `yaml:"ptr"`
	ByName map[string]inner
	Empty  string `yaml:"empty" secret:"true"`
}

func sample() outer {
	return outer{
		URL:    "nats://bob:SECRET-URL-PASS@cloud.example:4222",
		Plain:  "plain",
		Tokens: []string{"SECRET-TOKEN-1"},
		Hooks:  []inner{{User: "u", Password: "SECRET-PW", Headers: map[string]string{"Authorization": "Bearer SECRET-H", "X-Any": "SECRET-X"}, hidden: "keep"}},
		Ptr:    &inner{Password: "SECRET-PTR"},
		ByName: map[string]inner{"a": {Password: "SECRET-MAP"}},
	}
}

// TestRedact: every tagged value is replaced, untagged ones and the original
// value (shared maps, slices and pointers included) are left alone.
func TestRedact(t *testing.T) {
	orig := sample()
	r := Redact(orig)
	if got := strings.Join([]string{r.URL, r.Tokens[0], r.Hooks[0].Password, r.Hooks[0].Headers["Authorization"],
		r.Hooks[0].Headers["X-Any"], r.Ptr.Password, r.ByName["a"].Password}, " "); strings.Contains(got, "SECRET") {
		t.Fatalf("secrets left after Redact: %s", got)
	}
	if r.Plain != "plain" || r.Hooks[0].User != "u" || r.Hooks[0].hidden != "keep" || r.Empty != "" {
		t.Fatalf("non-secret fields changed: %+v", r)
	}
	if r.URL != "nats://bob:%3Credacted%3E@cloud.example:4222" {
		t.Fatalf("URL = %q", r.URL)
	}
	if orig.Hooks[0].Headers["Authorization"] != "Bearer SECRET-H" || orig.Ptr.Password != "SECRET-PTR" || orig.Tokens[0] != "SECRET-TOKEN-1" {
		t.Fatalf("Redact changed its argument: %+v", orig)
	}
	// ByName has no yaml tag: the lower-cased field name, as yaml.v3 uses.
	want := []string{"byname.a.password", "hooks[0].headers.Authorization", "hooks[0].headers.X-Any", "hooks[0].password",
		"ptr.password", "tokens[0]", "url"}
	if got := Find(r); !slices.Equal(got, want) {
		t.Fatalf("Find = %v, want %v", got, want)
	}
	if got := Find(orig); len(got) != 0 {
		t.Fatalf("Find on the original = %v", got)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "",
		"tcp://broker.local:1883":            "tcp://broker.local:1883",
		"tcp://user@broker.local:1883":       "tcp://user@broker.local:1883",
		"https://u:p@ops.example/x?token=t1": "https://u:%3Credacted%3E@ops.example/x?token=%3Credacted%3E",
		"https://ops.example/hook?a=1&b=2":   "https://ops.example/hook?a=%3Credacted%3E&b=%3Credacted%3E",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
