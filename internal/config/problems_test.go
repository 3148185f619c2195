package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// problems returns the problems in err, each as its message.
func problems(t *testing.T, err error) []string {
	t.Helper()
	require.Error(t, err)
	var out []string
	for _, e := range problemsOf(err) {
		out = append(out, e.Error())
	}
	return out
}

func TestCheckReportsEveryMistakeWithItsLine(t *testing.T) {
	path := write(t, `node_id: store-42
htpp:
  addr: 127.0.0.1:9000
checkpoints:
  interval: 5 minutes
  keep: lots
buffer:
  engine: rocksdb
windows:
  sizes: [1m, 1m]
  enabled: maybe
`)
	_, err := Check(path)
	got := problems(t, err)
	want := []string{
		path + `:2: htpp: unknown key (did you mean http?)`,
		path + `:5: checkpoints.interval: "5 minutes" is not a duration: use Go syntax like 5m or 30s`,
		path + `:6: checkpoints.keep: "lots" is not a whole number: use digits, like 3`,
		path + `:11: windows.enabled: "maybe" is not a boolean: use true or false`,
		path + `:8: buffer.engine: "rocksdb" must be log, sqlite or pebble`,
		path + `:10: windows.sizes[1]: 1m0s is already windows.sizes[0]: list each size once`,
	}
	require.Equal(t, want, got)
	for _, p := range got {
		require.NotContains(t, p, "unmarshal")
		require.NotContains(t, p, "not found in type")
	}
}

func TestLoadReportsEveryYAMLMistake(t *testing.T) {
	path := write(t, "checkpoints:\n  intervall: 5m\nhttp:\n  addr: [a, b]\n  max_body_bytes: huge\n")
	cfg, err := Load(path)
	require.Equal(t, []string{
		path + ":2: checkpoints.intervall: unknown key (did you mean interval?)",
		path + `:4: http.addr: a list is not a single value: write one value on the key's line`,
		path + `:5: http.max_body_bytes: "huge" is not a size: use bytes or a unit, like 65536, 64KiB, 16MiB or 1GiB`,
	}, problems(t, err))
	var p *Problem
	require.True(t, errors.As(err, &p))
	require.Equal(t, 2, p.Line)
	require.Equal(t, Default().HTTP, cfg.HTTP, "bad values leave the defaults")
}

func TestUnknownKeyFarFromAnyListsTheKeys(t *testing.T) {
	_, err := Parse([]byte("log:\n  verbosity: 3\n"))
	require.EqualError(t, err, "line 2: log.verbosity: unknown key (the keys here are format, level)")
}

func TestUnknownKeyInAListElement(t *testing.T) {
	_, err := Parse([]byte("alerts:\n  rules:\n    - name: a\n      stream: s\n      treshold: 3\n"))
	require.EqualError(t, err, "line 5: alerts.rules[0].treshold: unknown key (did you mean threshold?)")
}

func TestCrossFieldChecks(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "notify")
	require.NoError(t, os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o700))
	notExe := filepath.Join(t.TempDir(), "plain")
	require.NoError(t, os.WriteFile(notExe, []byte("x"), 0o600))
	cases := map[string]struct {
		body string
		want []string // "" = valid
	}{
		"rule on an unconfigured size": {
			"alerts:\n  rules:\n    - {name: hot, stream: t, source: window, window: 2m, op: '>', threshold: 1}\n",
			[]string{":3: alerts.rules[0].window: 2m0s is not in windows.sizes (1m0s, 5m0s, 1h0m0s): add it there or use one of those"},
		},
		"rule on a configured size": {
			"alerts:\n  rules:\n    - {name: hot, stream: t, source: window, window: 5m, op: '>', threshold: 1}\n", nil,
		},
		"duplicate sizes": {
			"windows:\n  sizes:\n    - 1m\n    - 5m\n    - 60s\n",
			[]string{":5: windows.sizes[2]: 1m0s is already windows.sizes[0]: list each size once"},
		},
		"http equal to mqtt": {
			"http:\n  addr: 127.0.0.1:1883\n",
			[]string{`:2: mqtt.addr: "127.0.0.1:1883" is also http.addr: give each listener its own port`},
		},
		"http on a wildcard with mqtt's port": {
			"http:\n  addr: :1883\n",
			[]string{`:2: mqtt.addr: "127.0.0.1:1883" is also http.addr: give each listener its own port`},
		},
		"mqtt off may share":   {"http:\n  addr: 127.0.0.1:1883\nmqtt:\n  mode: off\n", nil},
		"port 0 never clashes": {"http:\n  addr: 127.0.0.1:0\nmqtt:\n  addr: 127.0.0.1:0\n", nil},
		"ha listen equal to http": {
			"ha:\n  listen: 127.0.0.1:8080\n  peers: [127.0.0.1:7302, 127.0.0.1:7303]\n",
			[]string{`:2: ha.listen: "127.0.0.1:8080" is also http.addr: give each listener its own port`},
		},
		"backup command missing": {
			"alerts:\n  notify:\n    backup:\n      path: /nonexistent/sms-gateway\n",
			[]string{`:4: alerts.notify.backup.path: "/nonexistent/sms-gateway" is not an executable file: give the full path of a program that exists (chmod +x it)`},
		},
		"backup command not executable": {
			"alerts:\n  notify:\n    backup:\n      path: " + notExe + "\n",
			[]string{`:4: alerts.notify.backup.path: "` + notExe + `" is not an executable file: give the full path of a program that exists (chmod +x it)`},
		},
		"backup command executable": {"alerts:\n  notify:\n    backup:\n      path: " + exe + "\n", nil},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			path := write(t, c.body)
			_, err := Check(path)
			if c.want == nil {
				require.NoError(t, err)
				return
			}
			var want []string
			for _, w := range c.want {
				want = append(want, path+w)
			}
			require.Equal(t, want, problems(t, err))
		})
	}
}

func TestValidNodeID(t *testing.T) {
	require.Equal(t, "edge01-example-com", ValidNodeID("edge01.example.com"))
	require.Equal(t, "a-b-c-d-e", ValidNodeID("a b/c*d>e"))
	require.Equal(t, "store-42", ValidNodeID("store-42"))
	cfg := Default()
	cfg.NodeID = ValidNodeID("edge01.example.com")
	require.NoError(t, cfg.Validate())
	cfg.NodeID = "edge01.example.com"
	require.EqualError(t, cfg.Validate(),
		`node_id: "edge01.example.com" must be non-empty and contain no spaces, dots, slashes, '*' or '>': set another with --node-id or node_id (e.g. "edge01-example-com")`)
}

func TestExampleIsValid(t *testing.T) {
	path := write(t, string(Example))
	cfg, err := Check(path)
	require.NoError(t, err)
	require.Equal(t, []time.Duration{time.Minute, 5 * time.Minute, time.Hour}, cfg.Windows.Sizes)
	require.Len(t, cfg.Alerts.Rules, 1)
}

func TestDurationNeedsAUnitAndKeysAreSetOnce(t *testing.T) {
	_, err := Parse([]byte("checkpoints:\n  interval: 30\n  keep: 2\n  keep: 3\nstreams:\n  door: {priority: high}\n  door: {priority: low}\n"))
	require.Equal(t, []string{
		`line 2: checkpoints.interval: "30" is not a duration: use Go syntax like 5m or 30s`,
		`line 4: checkpoints.keep: is set again (first on line 3): set each key once`,
		`line 7: streams.door: is set again (first on line 6): set each key once`,
	}, problems(t, err))
}
