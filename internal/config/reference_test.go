package config

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/holdfast-edge/holdfast/internal/alert"
)

// TestConfigReferenceIsCurrent: docs/CONFIG.md is what `holdfast config
// reference` prints, so a changed field, default or doc comment without a
// regenerated reference fails here.
func TestConfigReferenceIsCurrent(t *testing.T) {
	want, err := reference()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatalf("%v: generate it from the repository root with: %s", err, ReferenceCommand)
	}
	if string(got) != want {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(want, "\n")
		line := 0
		for line < len(gl) && line < len(wl) && gl[line] == wl[line] {
			line++
		}
		have, should := "(end of file)", "(end of file)"
		if line < len(gl) {
			have = gl[line]
		}
		if line < len(wl) {
			should = wl[line]
		}
		t.Fatalf("docs/CONFIG.md is out of date with the config structs; regenerate it from the repository root with:\n\n\t%s\n\nfirst difference at line %d:\n have: %s\n want: %s",
			ReferenceCommand, line+1, have, should)
	}
}

// TestConfigReferenceListsEveryKey: every key the YAML encoder writes for
// a config with every optional part set — found by the yaml library, not
// by the reference's own walk — has a row in the reference, with its type
// and default.
func TestConfigReferenceListsEveryKey(t *testing.T) {
	ref := Reference()
	c := Default()
	yes := true
	c.Cloud.Compress = &yes
	c.Cloud.HTTP = &HTTPSink{Compress: &yes}
	c.Cloud.MQTT = &MQTTSink{}
	c.Cloud.User, c.Cloud.Password, c.Cloud.Token = "u", "p", "t"
	c.Cloud.Creds, c.Cloud.CA, c.Cloud.Cert, c.Cloud.Key = "c", "c", "c", "c"
	c.Streams = map[string]Stream{"s": {}}
	c.Alerts.Rules = []alert.Rule{{Name: "r"}}
	c.Alerts.Notify.Webhooks = []alert.WebhookOptions{{Name: "w", Headers: map[string]string{"a": "b"}}}
	c.Alerts.Notify.Backup = &alert.CommandOptions{Args: []string{"a"}}
	c.Site.Zones = []SiteZone{{Zone: "z"}}
	c.Site.Rules = []SiteRule{{Devices: []string{"d"}, Streams: []string{"s"}, Nodes: []string{"n"}, Zone: "z"}}
	b, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var keys, sections []string
	var flatten func(prefix string, n *yaml.Node)
	flatten = func(prefix string, n *yaml.Node) {
		if n.Kind == yaml.DocumentNode {
			flatten(prefix, n.Content[0])
			return
		}
		if n.Kind == yaml.SequenceNode {
			for _, e := range n.Content {
				flatten(prefix+"[]", e)
			}
			return
		}
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if prefix == "streams" {
				k = "<name>"
			}
			if prefix != "" {
				k = prefix + "." + k
			}
			switch v := n.Content[i+1]; {
			case strings.Contains(ref, "| `"+k+"` | map of string"): // a map of free keys: one row
				keys = append(keys, k)
			case v.Kind == yaml.MappingNode || v.Kind == yaml.SequenceNode && len(v.Content) > 0 && v.Content[0].Kind == yaml.MappingNode:
				sections = append(sections, k)
				flatten(k, v)
			default:
				keys = append(keys, k)
			}
		}
	}
	flatten("", &doc)
	if len(keys) < 120 {
		t.Fatalf("only %d keys in the marshalled config: is the flattening broken?", len(keys))
	}
	for _, k := range keys {
		if !strings.Contains(ref, "| `"+k+"` |") {
			t.Errorf("the config reference has no row for %s", k)
		}
	}
	for _, k := range sections {
		if !strings.Contains(ref, "| `"+k+"` | object") && !strings.Contains(ref, "| `"+k+"` | list of objects") && !strings.Contains(ref, "\n## "+k+"\n") && k != "streams.<name>" {
			t.Errorf("the config reference has neither a section nor an object row for %s", k)
		}
	}
	for _, row := range []string{
		"| `site.failure_detection` | duration | `5s` |",
		"| `buffer.max_bytes` | size | `1GiB` |",
		"| `windows.sizes` | list of durations | `[1m, 5m, 1h]` |",
		"| `alerts.notify.webhooks[].timeout` | duration | `5s` |",
		"| `node_id` | string | `" + referenceHost + "` |",
		"| `ha.secret` | string |  |",
	} {
		if !strings.Contains(ref, row) {
			t.Errorf("the config reference lacks the row starting %s", row)
		}
	}
}

// TestConfigReferenceShowsDocComments: a key's description is its field's
// doc comment, Go field names made keys.
func TestConfigReferenceShowsDocComments(t *testing.T) {
	ref := Reference()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile("\\| `site.failure_detection` \\|.*\\| `failure_detection` is how long a silent member takes to leave the membership"),
		regexp.MustCompile("\\| `ha.failures` \\|.*\\| See `ha.heartbeat`. \\|"),
		regexp.MustCompile("\\| `alerts.rules\\[\\].severity` \\| string \\| `warning` \\| default warning \\|"),
	} {
		if !want.MatchString(ref) {
			t.Errorf("the config reference has no line matching %s", want)
		}
	}
}
